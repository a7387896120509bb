//! The shipped `config.toml` passes `switchyard check` with every plugin
//! loaded (built here, so the debug artifacts stand in for target/release).

mod support;

use std::process::Command;

#[test]
fn the_shipped_config_checks_clean_with_every_plugin() {
    let plugin_dir = std::path::Path::new(&support::plugin("switchyard_detection"))
        .parent()
        .unwrap()
        .to_owned();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml")).unwrap();
    assert!(shipped.contains("plugin_dir = \"target/release\""));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let local = shipped.replace(
        "plugin_dir = \"target/release\"",
        &format!("plugin_dir = {:?}", plugin_dir.display().to_string()),
    );
    std::fs::write(&config, local).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        // As deployed: with the credentials the file names, so that `check`
        // has no missing credential to warn about.
        .env("SWITCHYARD_JWT_SECRET", "a-secret-for-the-shipped-config")
        .env("SWITCHYARD_API_KEYS", "ci:a-key-for-the-shipped-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("warnings: none"), "{stdout}");
    for producer in ["detection", "worker", "prometheus", "summary", "config"] {
        assert!(
            stdout.contains(&format!("producer {producer}")),
            "{producer} types missing:\n{stdout}"
        );
    }
}
