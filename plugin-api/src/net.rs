//! Binding a plugin's listening socket.

use std::net::{SocketAddr, TcpListener};

use crate::PluginError;

/// Binds a TCP listener on `addr` for an accept loop that polls, and returns
/// it with the address it got (the real port when `addr`'s is 0).
///
/// Non-blocking, so the accept loop can notice its shutdown flag between
/// polls instead of waiting for a connection that may never come. The error
/// is ready for `start`: [`PluginError::Listen`], `cannot listen on {addr}: {why}`.
pub fn bind_polled(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), PluginError> {
    let bound = || {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok::<_, std::io::Error>((listener, local))
    };
    bound().map_err(|source| PluginError::Listen { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn binds_non_blocking_and_reports_the_port() {
        let (listener, local) = bind_polled("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(local.port(), 0);
        assert_eq!(listener.local_addr().unwrap(), local);
        let err = listener.accept().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldBlock);
        let taken = bind_polled(local).unwrap_err().to_string();
        assert!(
            taken.starts_with(&format!("cannot listen on {local}: ")),
            "{taken}"
        );
    }
}
