//! A remote worker's first frame, its token, and the parent's answer to
//! it (`remote.rs`; PROTOCOL.md, section 1).

use tokio::io::AsyncReadExt;

use crate::handoff::{same, AUTH_ASKS_PROOF};
use crate::wire::envelope::Kind;

/// Reads the token, refuses another than `secrets`' own, and sends the
/// proof back to a worker that asks for it (`Auth`, its second byte
/// [`AUTH_ASKS_PROOF`]).
pub(super) async fn answer_token<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    secrets: &(String, String),
) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let (flags, presented) = read_token(stream).await?;
    if !same(&presented, secrets.0.as_bytes()) {
        return Err("another token than this launch's".into());
    }
    if flags & AUTH_ASKS_PROOF != 0 {
        let frame = crate::wire::wsframe::auth_frame(0, &secrets.1);
        let io = |e: std::io::Error| format!("connection: {e}");
        stream.write_all(&frame).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
    }
    Ok(())
}

/// The longest token frame read: a token is 64 characters.
const MAX_TOKEN: usize = 125;

/// The payload of the first WebSocket frame, which must be an `Auth`
/// message: its second byte (flags), and the token.
pub(crate) async fn read_token<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(u8, Vec<u8>), String> {
    let io = |e: std::io::Error| format!("connection: {e}");
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).await.map_err(io)?;
    let len = usize::from(head[1] & 0x7f);
    if head[0] != 0x82 || len > MAX_TOKEN {
        return Err("the first frame is not a token".into());
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        stream.read_exact(&mut mask).await.map_err(io)?;
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.map_err(io)?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    match payload.as_slice() {
        [kind, flags, token @ ..] if *kind == Kind::Auth as u8 && flags & !AUTH_ASKS_PROOF == 0 => {
            Ok((*flags, token.to_vec()))
        }
        _ => Err("the first message is not a token".into()),
    }
}

/// 256 random bits from the kernel, in hex.
pub(super) fn fresh_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // Raw: nix does not wrap `getrandom`.
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_compared_whole() {
        let (a, b) = (fresh_token().unwrap(), fresh_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.clone().as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
        assert!(!same(a.as_bytes(), &a.as_bytes()[..63]));
    }
}
