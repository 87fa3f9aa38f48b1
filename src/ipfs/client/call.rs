//! One call to the node: the request put together ([`Call`]), the answer checked for the
//! node's errors (an error status, or an error line in a streamed answer), and read as the
//! caller asks: JSON, JSON lines, bytes or nothing. Bodies are multipart with one part.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{duration_param, ApiErrorKind, IpfsClient, IpfsError};

/// A multipart body's boundary and framing around one part named `file`.
struct Multipart {
    boundary: String,
}

/// A stream of body chunks.
pub(super) type ChunkStream = futures::stream::BoxStream<'static, Result<Bytes, io::Error>>;

impl Multipart {
    fn new() -> Multipart {
        Multipart {
            boundary: format!("nixipfs-{:032x}", rand::random::<u128>()),
        }
    }

    fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    fn head(&self, filename: &str) -> Bytes {
        let filename: String = filename
            .chars()
            .map(|c| match c {
                '"' | '\\' | '\r' | '\n' => '_',
                c => c,
            })
            .collect();
        Bytes::from(format!(
            "--{}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            self.boundary
        ))
    }

    fn tail(&self) -> Bytes {
        Bytes::from(format!("\r\n--{}--\r\n", self.boundary))
    }

    /// A body whose one part, named `filename`, holds `data`.
    fn body(&self, filename: &str, data: &[u8]) -> Vec<u8> {
        let mut body = self.head(filename).to_vec();
        body.extend_from_slice(data);
        body.extend_from_slice(&self.tail());
        body
    }

    /// A body whose one part, named `filename`, is streamed from `data`.
    fn stream(&self, filename: &str, data: ChunkStream) -> ChunkStream {
        let head = futures::stream::once(futures::future::ready(Ok(self.head(filename))));
        let tail = futures::stream::once(futures::future::ready(Ok(self.tail())));
        head.chain(data).chain(tail).boxed()
    }
}

/// The longest answer read whole; longer ones fail the call. Answers that grow with what the
/// node holds are read line by line instead ([`Call::for_each_line`]).
pub(super) const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The longest line of an answer read line by line.
pub(super) const MAX_LINE_BYTES: usize = 1 << 20;

/// Runs `exchange` with `deadline` (if any) and a little more: the node's own deadline goes
/// first, to get its message.
async fn within<T>(
    client: &IpfsClient,
    command: &str,
    deadline: Option<Duration>,
    exchange: impl std::future::Future<Output = Result<T, IpfsError>>,
) -> Result<T, IpfsError> {
    let start = std::time::Instant::now();
    let result = match deadline {
        None => exchange.await,
        Some(deadline) => {
            match tokio::time::timeout(deadline + Duration::from_secs(5), exchange).await {
                Ok(result) => result,
                Err(_) => Err(client.timeout_error(command, deadline)),
            }
        }
    };
    tracing::debug!(
        target: CALL_TIMES_TARGET,
        "IPFS call {command}: {:.3} s{}",
        start.elapsed().as_secs_f64(),
        if result.is_ok() { "" } else { " (failed)" }
    );
    result
}

/// The tracing target of the line logged after every call, `IPFS call COMMAND: SECONDS s`
/// (with ` (failed)` when it failed): `NIXIPFS_LOG=nixipfs=info,nixipfs::ipfs::calls=debug`
/// shows where a publication spends its time on the node.
pub const CALL_TIMES_TARGET: &str = "nixipfs::ipfs::calls";

/// The body of an error answer.
#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(rename = "Message")]
    message: String,
}

/// The node's error `message` for `command`, classified (see [`ApiErrorKind::of`]).
pub(super) fn api_error(command: &str, status: u16, message: String) -> IpfsError {
    IpfsError::Api {
        command: command.to_string(),
        status,
        kind: ApiErrorKind::of(&message),
        message,
    }
}

pub(super) fn bad_answer(command: &str, detail: impl Into<String>) -> IpfsError {
    IpfsError::BadAnswer {
        command: command.to_string(),
        detail: detail.into(),
    }
}

/// Every JSON value of an answer, in order: one for most calls, one per line for the calls that
/// stream (`add` with its progress lines, `refs/local`, `dag/import`).
pub(super) fn json_values<T: DeserializeOwned>(
    command: &str,
    body: &[u8],
) -> Result<Vec<T>, IpfsError> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<T>()
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| bad_answer(command, format!("{e}: {}", snippet(body))))
}

/// The last JSON value of an answer (the result, after any progress lines).
pub(super) fn last_json_value<T: DeserializeOwned>(
    command: &str,
    body: &[u8],
) -> Result<T, IpfsError> {
    let value = json_values::<serde_json::Value>(command, body)?
        .pop()
        .ok_or_else(|| bad_answer(command, "an empty answer"))?;
    T::deserialize(value).map_err(|e| bad_answer(command, format!("{e}: {}", snippet(body))))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().to_string()
}

/// The first `{"Message": …, "Type": "error"}` line of a streamed answer (kubo reports errors
/// that happen after the headers were sent this way, and in a trailer).
fn stream_error(body: &[u8]) -> Option<String> {
    body.split(|&b| b == b'\n').find_map(|line| {
        let value: serde_json::Value = serde_json::from_slice(line).ok()?;
        if value.get("Type")?.as_str()? == "error" {
            Some(value.get("Message")?.as_str()?.to_string())
        } else {
            None
        }
    })
}

impl IpfsClient {
    fn http_error(&self, command: &str, source: reqwest::Error) -> IpfsError {
        if source.is_connect() {
            IpfsError::Unreachable {
                addr: self.addr.to_string(),
                command: command.to_string(),
                source,
            }
        } else if source.is_timeout() {
            self.timeout_error(command, self.timeouts.call)
        } else {
            IpfsError::Http {
                addr: self.addr.to_string(),
                command: command.to_string(),
                source,
            }
        }
    }

    pub(super) fn timeout_error(&self, command: &str, after: Duration) -> IpfsError {
        IpfsError::Timeout {
            addr: self.addr.to_string(),
            command: command.to_string(),
            after,
        }
    }

    /// Turns a finished response into its body, or the node's error.
    async fn answer(
        &self,
        command: &str,
        mut response: reqwest::Response,
    ) -> Result<Bytes, IpfsError> {
        let status = response.status();
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.http_error(command, e))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(bad_answer(
                    command,
                    format!("an answer longer than {MAX_ANSWER_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let body = body.freeze();
        let message = serde_json::from_slice::<ErrorAnswer>(&body).map(|e| e.message);
        // A command the node lacks: 404 with kubo's "Not Found" message, or a body that is
        // not JSON at all (js-ipfs).
        let unknown = match &message {
            Ok(message) => message == "Not Found",
            Err(_) => !body.starts_with(b"{"),
        };
        if status == StatusCode::NOT_FOUND && unknown {
            return Err(IpfsError::Unsupported {
                addr: self.addr.to_string(),
                command: command.to_string(),
            });
        }
        let failure = if status.is_success() {
            stream_error(&body)
        } else {
            Some(message.unwrap_or_else(|_| snippet(&body)))
        };
        match failure {
            Some(message) => Err(api_error(command, status.as_u16(), message)),
            None => Ok(body),
        }
    }

    /// A call of `command`, with the ordinary deadline ([`Timeouts::call`]) until told
    /// otherwise.
    pub(super) fn call<'c>(&'c self, command: &'c str) -> Call<'c> {
        Call {
            client: self,
            command,
            query: Vec::new(),
            body: None,
            deadline: Some(self.timeouts.call),
            node_timeout: false,
        }
    }
}

/// One call being put together (see [`IpfsClient::call`]), then made with one of its typed
/// ends: [`Call::json`], [`Call::json_lines`], [`Call::bytes`] or [`Call::unit`].
pub(super) struct Call<'c> {
    client: &'c IpfsClient,
    command: &'c str,
    query: Vec<(&'static str, String)>,
    body: Option<(String, reqwest::Body)>,
    deadline: Option<Duration>,
    node_timeout: bool,
}

impl<'c> Call<'c> {
    /// Adds a query parameter (only `arg` may be given twice).
    pub(super) fn arg(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    /// Allows [`Timeouts::long`] instead of [`Timeouts::call`].
    pub(super) fn long(mut self) -> Self {
        self.deadline = Some(self.client.timeouts.long);
        self
    }

    /// Sets no deadline on the call.
    pub(super) fn no_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// Also passes the deadline to the node (`timeout=`), so that it gives up its own work.
    pub(super) fn node_timeout(mut self) -> Self {
        self.node_timeout = true;
        self
    }

    /// Sends `data` as the one file of a multipart body.
    pub(super) fn file(mut self, name: &str, data: &[u8]) -> Self {
        let multipart = Multipart::new();
        let body = multipart.body(name, data);
        self.body = Some((multipart.content_type(), body.into()));
        self
    }

    /// Streams `data` as the one file of a multipart body.
    pub(super) fn file_stream(mut self, name: &str, data: ChunkStream) -> Self {
        let multipart = Multipart::new();
        let body = reqwest::Body::wrap_stream(multipart.stream(name, data));
        self.body = Some((multipart.content_type(), body));
        self
    }

    /// The request, and what [`within`] needs to make it.
    fn request(
        self,
    ) -> (
        &'c IpfsClient,
        &'c str,
        reqwest::RequestBuilder,
        Option<Duration>,
    ) {
        let Call {
            client,
            command,
            mut query,
            body,
            deadline,
            node_timeout,
        } = self;
        if let (true, Some(deadline)) = (node_timeout, deadline) {
            query.push(("timeout", duration_param(deadline)));
        }
        let mut request = client
            .http
            .post(client.addr.command_url(command))
            .query(&query);
        if let Some((content_type, body)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(body);
        }
        (client, command, request, deadline)
    }

    /// Makes the call and returns the body of a successful answer (at most
    /// [`MAX_ANSWER_BYTES`]).
    pub(super) async fn bytes(self) -> Result<Bytes, IpfsError> {
        let (client, command, request, deadline) = self.request();
        let exchange = async {
            let response = request
                .send()
                .await
                .map_err(|e| client.http_error(command, e))?;
            client.answer(command, response).await
        };
        within(client, command, deadline, exchange).await
    }

    /// Makes the call and hands each line of a successful answer to `line` as it arrives, so
    /// that an answer as long as the node's content (`refs/local`) is never held whole. A
    /// line longer than [`MAX_LINE_BYTES`] or an error line fails the call.
    pub(super) async fn for_each_line(
        self,
        mut line: impl FnMut(&[u8]) -> Result<(), IpfsError>,
    ) -> Result<(), IpfsError> {
        let (client, command, request, deadline) = self.request();
        let exchange = async {
            let mut response = request
                .send()
                .await
                .map_err(|e| client.http_error(command, e))?;
            if !response.status().is_success() {
                // An error answer is short: read it as any other.
                let status = response.status().as_u16();
                let body = client.answer(command, response).await?;
                return Err(api_error(command, status, snippet(&body)));
            }
            let mut pending: Vec<u8> = Vec::new();
            let mut each = |text: &[u8]| -> Result<(), IpfsError> {
                if text.iter().all(u8::is_ascii_whitespace) {
                    return Ok(());
                }
                if let Some(message) = stream_error(text) {
                    return Err(api_error(command, 200, message));
                }
                line(text)
            };
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| client.http_error(command, e))?
            {
                pending.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                    each(&pending[start..start + end])?;
                    start += end + 1;
                }
                pending.drain(..start);
                if pending.len() > MAX_LINE_BYTES {
                    return Err(bad_answer(
                        command,
                        format!("a line longer than {MAX_LINE_BYTES} bytes"),
                    ));
                }
            }
            each(&pending)
        };
        within(client, command, deadline, exchange).await
    }

    /// Makes the call and checks that it succeeded.
    pub(super) async fn unit(self) -> Result<(), IpfsError> {
        self.bytes().await.map(drop)
    }

    /// Makes the call and reads the answer as a `T` (the last JSON value, after any progress
    /// lines).
    pub(super) async fn json<T: DeserializeOwned>(self) -> Result<T, IpfsError> {
        let command = self.command.to_string();
        last_json_value(&command, &self.bytes().await?)
    }

    /// Makes the call and reads the answer as a stream of `T`, one JSON value per line.
    pub(super) async fn json_lines<T: DeserializeOwned>(self) -> Result<Vec<T>, IpfsError> {
        let command = self.command.to_string();
        json_values(&command, &self.bytes().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::client::AddAnswer;

    #[test]
    fn answers_of_both_nodes_parse() {
        let parse_add = |body: &[u8]| last_json_value::<AddAnswer>("add", body);
        // js-ipfs: Size as a number, CIDv1 in base58btc.
        let js = parse_add(br#"{"Name":"hello.txt","Hash":"zb2rhcc1wJn2GHDLT2YkmPq5b69cXc2xfRZZmyufbjFUfBkxr","Size":6}"#)
            .unwrap();
        // kubo: Size as a string, base32, after a progress line.
        let kubo = parse_add(b"{\"Name\":\"\",\"Bytes\":6}\n{\"Name\":\"hello.txt\",\"Hash\":\"bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am\",\"Size\":\"6\"}\n")
            .unwrap();
        assert_eq!(js, kubo);
        assert_eq!(js.size, 6);
        assert!(parse_add(b"{\"Name\":\"x\",\"Hash\":\"nope\"}").is_err());
        assert!(parse_add(b"").is_err());

        assert_eq!(
            stream_error(
                b"{\"Ref\":\"x\"}\n{\"Message\":\"boom\",\"Code\":0,\"Type\":\"error\"}\n"
            ),
            Some("boom".to_string())
        );
        assert_eq!(stream_error(b"{\"Ref\":\"x\"}\n"), None);
    }

    /// Serves `body` (written in pieces of 1000 bytes) to every request on a free port, after
    /// reading the request head.
    fn serve(body: Vec<u8>) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                    head.push(byte[0]);
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                for piece in body.chunks(1000) {
                    if stream.write_all(piece).is_err() {
                        break;
                    }
                }
            }
        });
        port
    }

    fn client(port: u16) -> IpfsClient {
        let addr = crate::ipfs::api_addr::ApiAddr::new("127.0.0.1", port).unwrap();
        IpfsClient::new(addr, super::super::Timeouts::default()).unwrap()
    }

    #[tokio::test]
    async fn answers_as_long_as_the_nodes_content_are_read_line_by_line() {
        // refs/local of more blocks than an answer read whole may hold, its lines cut
        // anywhere by the pieces the server writes.
        let cids: Vec<crate::ipfs::cid::Cid> = (0u32..300_000)
            .map(|i| {
                crate::ipfs::cid::Cid::sha2_256(1, crate::ipfs::cid::RAW, &i.to_le_bytes()).unwrap()
            })
            .collect();
        let mut body = Vec::new();
        for cid in &cids {
            body.extend_from_slice(format!("{{\"Ref\":\"{cid}\",\"Err\":\"\"}}\n").as_bytes());
        }
        assert!(body.len() > MAX_ANSWER_BYTES);
        let keys = client(serve(body.clone())).refs_local().await.unwrap();
        assert_eq!(keys.len(), cids.len());
        assert!(cids
            .iter()
            .all(|c| keys.contains(&super::super::block_key(c))));
        // The same bytes as the answer of an ordinary call are refused, not buffered.
        let err = client(serve(body)).version().await.unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        // An error line in the stream fails the call with the node's message.
        let broken =
            b"{\"Ref\":\"bafkqaaa\"}\n{\"Message\":\"datastore closed\",\"Type\":\"error\"}\n";
        let err = client(serve(broken.to_vec()))
            .refs_local()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("datastore closed"), "{err}");
    }

    #[tokio::test]
    async fn a_garbage_collection_longer_than_an_answer_read_whole_is_counted() {
        // kubo and js-ipfs answer repo/gc with a line per block removed.
        let mut body = Vec::new();
        for i in 0u32..250_000 {
            let cid = crate::ipfs::cid::Cid::sha2_256(1, crate::ipfs::cid::RAW, &i.to_le_bytes())
                .unwrap();
            body.extend_from_slice(format!("{{\"Key\":{{\"/\":\"{cid}\"}}}}\n").as_bytes());
        }
        body.extend_from_slice(b"{\"Error\":\"pinned: recursive\"}\n{\"Error\":\"other\"}\n");
        assert!(body.len() > MAX_ANSWER_BYTES);
        let answer = client(serve(body)).repo_gc().await.unwrap();
        assert_eq!(answer.removed, 250_000);
        assert_eq!(answer.errors, 2);
        assert_eq!(answer.first_error.as_deref(), Some("pinned: recursive"));
        let broken =
            b"{\"Key\":{\"/\":\"bafkqaaa\"}}\n{\"Message\":\"gc lock\",\"Type\":\"error\"}\n";
        let err = client(serve(broken.to_vec())).repo_gc().await.unwrap_err();
        assert!(err.to_string().contains("gc lock"), "{err}");
    }

    #[test]
    fn multipart_framing() {
        let m = Multipart::new();
        let head = String::from_utf8(m.head("a\"b.car").to_vec()).unwrap();
        assert!(head.starts_with(&format!("--{}\r\n", m.boundary)));
        assert!(head.contains("filename=\"a_b.car\""));
        assert!(head.contains("Content-Type: application/octet-stream\r\n\r\n"));
        assert_eq!(m.tail(), Bytes::from(format!("\r\n--{}--\r\n", m.boundary)));
        assert!(m.content_type().ends_with(&m.boundary));
    }
}
