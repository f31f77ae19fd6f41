//! The PROXY protocol (v1 text and v2 binary, as haproxy's `send-proxy` and `send-proxy-v2`
//! send it) on the ingest listener with `PROXY_PROTOCOL=on`: the header a load balancer writes
//! before the HTTP request, naming the client it accepted, so that `RATE_LIMIT_PER_IP` and the
//! logs see that client instead of the balancer.
//!
//! The `ppp` crate parses the header; this module owns taking exactly its bytes off the socket
//! (peeked until complete, then consumed), so that HTTP is read from the request's first byte.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest header accepted: a v1 header is at most 107 bytes, a v2 one 16 bytes and its
/// addresses and TLVs, which haproxy keeps well under this.
const MAX_HEADER: usize = 4096;

/// How long to wait before looking again at a header that has only partly arrived.
const PARTIAL_WAIT: Duration = Duration::from_millis(2);

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The bytes are not a PROXY protocol header.
    #[error("not a PROXY protocol header: {0}")]
    Invalid(String),
    /// Longer than [`MAX_HEADER`] without being complete.
    #[error("a PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    /// The client closed the connection or reading failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY header that starts `stream`; returns the client it names, or `None` for a
/// header that names none (v1 `UNKNOWN`, v2 `LOCAL`, as a balancer's own health checks send):
/// then the connection's own peer is the client.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = vec![0; MAX_HEADER];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        let header = HeaderResult::parse(&buf[..n]);
        if header.is_incomplete() {
            // A v1 header ends at its first CRLF: one there that still leaves it incomplete
            // is malformed, not waiting for more bytes.
            if matches!(header, HeaderResult::V1(_)) && buf[..n].windows(2).any(|w| w == b"\r\n") {
                return Err(ProxyHeaderError::Invalid(
                    "an incomplete v1 header line".into(),
                ));
            }
            if n == MAX_HEADER {
                return Err(ProxyHeaderError::TooLong);
            }
            // Peek returns at once while any byte is waiting: wait for the rest this way.
            tokio::time::sleep(PARTIAL_WAIT).await;
            continue;
        }
        let (len, client) = match header {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_client(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_client(&h)),
            HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
            HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(e.to_string())),
        };
        stream.read_exact(&mut buf[..len]).await?;
        return Ok(client);
    }
}

fn v1_client(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_client(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Sends `chunks` (with a pause between them) on a fresh connection; returns what
    /// `read_header` made of it and the bytes left for HTTP.
    async fn received(chunks: Vec<Vec<u8>>) -> (Result<Option<SocketAddr>, String>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sending = tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            for chunk in chunks {
                conn.write_all(&chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let result = read_header(&mut stream).await.map_err(|e| e.to_string());
        sending.await.unwrap();
        let mut rest = Vec::new();
        if result.is_ok() {
            stream.read_to_end(&mut rest).await.unwrap();
        }
        (result, rest)
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    #[tokio::test]
    async fn a_v1_header_names_the_client_and_leaves_the_request() {
        let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 5000\r\n".to_vec();
        let (client, rest) = received(vec![[header, GET.to_vec()].concat()]).await;
        assert_eq!(client, Ok(Some("203.0.113.7:51234".parse().unwrap())));
        assert_eq!(rest, GET);

        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 5000\r\n".to_vec();
        let (client, _) = received(vec![v6]).await;
        assert_eq!(client, Ok(Some("[2001:db8::1]:4000".parse().unwrap())));

        let (client, rest) = received(vec![b"PROXY UNKNOWN\r\n".to_vec(), GET.to_vec()]).await;
        assert_eq!(client, Ok(None));
        assert_eq!(rest, GET);
    }

    #[tokio::test]
    async fn a_v2_header_arriving_in_pieces_is_read_whole() {
        let header = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "198.51.100.9:40000".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:5000".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let (first, second) = header.split_at(10);
        let (client, rest) = received(vec![first.to_vec(), [second, GET].concat()]).await;
        assert_eq!(client, Ok(Some("198.51.100.9:40000".parse().unwrap())));
        assert_eq!(rest, GET);

        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(received(vec![local]).await.0, Ok(None));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let (client, _) = received(vec![GET.to_vec()]).await;
        assert!(client.unwrap_err().contains("not a PROXY protocol header"));
        let (client, _) = received(vec![b"PROXY TCP4 1.2.3.4\r\n".to_vec()]).await;
        assert!(client.is_err());
        let (client, _) = received(vec![Vec::new()]).await;
        assert!(client.is_err(), "a connection closed before any byte");
    }
}
