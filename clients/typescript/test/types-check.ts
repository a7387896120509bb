// Compile-time checks of the pattern typing (tsc --noEmit in `npm test`).
import { SwitchyardClient } from "../dist/index.js";

interface EventMap {
  "alert.created": { id: string; severity: "low" | "high" };
  "alert.resolved": { id: string };
  "job.progress": { job_id: string; percent?: number | null };
}
declare const client: SwitchyardClient<EventMap>;

client.on("alert.*", (e) => {
  const t: "alert.created" | "alert.resolved" = e.type;
  if (e.type === "alert.created") {
    const s: "low" | "high" = e.payload.severity;
    void s;
  }
  // @ts-expect-error job payloads are not in alert.*
  void e.payload.job_id;
  void t;
});
client.on("job.progress", (e) => {
  const p: number | null | undefined = e.payload.percent;
  void p;
});
client.on("*", (e) => {
  const t: keyof EventMap = e.type;
  void t;
});
client.on("gap", (g) => {
  const c: string[] = g.channels;
  void c;
});
client.on("state", (s) => {
  // @ts-expect-error not a state
  const x: "open" = s;
  void x;
});
