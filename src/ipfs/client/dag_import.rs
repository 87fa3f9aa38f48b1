//! A `dag/import` request that streams: its CAR is written block by block while the DAG is
//! being built, through a bounded channel, and the node's answer is awaited at the end.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::call::{api_error, bad_answer};
use super::{ImportAnswer, IpfsClient, IpfsError};
use crate::ipfs::car;
use crate::ipfs::cid::Cid;

impl IpfsClient {
    /// Starts one streaming `dag/import` request whose CAR names `root` (imported with
    /// `pin-roots=false`: pinning is a separate step). Blocks are then added with
    /// [`DagImport::send`] and the request ends with [`DagImport::finish`].
    pub fn start_dag_import(&self, root: &Cid) -> DagImport {
        let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
        let header = Bytes::from(car::encode_header(&[*root]));
        let header_len = header.len() as u64;
        let sections = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let car = futures::stream::once(futures::future::ready(Ok(header))).chain(sections);
        let client = self.clone();
        let task = tokio::spawn(async move {
            // No deadline while the CAR is being produced: `finish` waits for the answer.
            let answer: Vec<ImportLine> = client
                .call("dag/import")
                .arg("pin-roots", false)
                .arg("stats", true)
                .arg("silent", false)
                .file_stream("blocks.car", car.boxed())
                .no_deadline()
                .json_lines()
                .await?;
            import_answer(answer)
        });
        DagImport {
            tx: Some(tx),
            task: Some(task),
            client: self.clone(),
            answer: ImportAnswer {
                node_block_count: None,
                blocks_sent: 0,
                car_bytes: header_len,
            },
        }
    }
}

/// One line of the `dag/import` answer.
#[derive(Deserialize)]
struct ImportLine {
    #[serde(rename = "Root")]
    root: Option<ImportRoot>,
    #[serde(rename = "Stats")]
    stats: Option<ImportStats>,
}

#[derive(Deserialize)]
struct ImportRoot {
    #[serde(rename = "PinErrorMsg")]
    pin_error: Option<String>,
}

#[derive(Deserialize)]
struct ImportStats {
    #[serde(rename = "BlockCount")]
    block_count: Option<u64>,
}

/// The node's count of the blocks imported, or the error it reports for a root.
fn import_answer(lines: Vec<ImportLine>) -> Result<ImportAnswer, IpfsError> {
    let mut answer = ImportAnswer::default();
    for line in lines {
        if let Some(count) = line.stats.and_then(|s| s.block_count) {
            answer.node_block_count = Some(count);
        }
        if let Some(message) = line
            .root
            .and_then(|r| r.pin_error)
            .filter(|m| !m.is_empty())
        {
            return Err(api_error("dag/import", 200, message));
        }
    }
    Ok(answer)
}

/// One `dag/import` request being streamed (see [`IpfsClient::start_dag_import`]).
pub struct DagImport {
    tx: Option<mpsc::Sender<Result<Bytes, io::Error>>>,
    task: Option<JoinHandle<Result<ImportAnswer, IpfsError>>>,
    client: IpfsClient,
    answer: ImportAnswer,
}

impl fmt::Debug for DagImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DagImport")
            .field("blocks_sent", &self.answer.blocks_sent)
            .field("car_bytes", &self.answer.car_bytes)
            .finish()
    }
}

impl DagImport {
    /// Sections and bytes written so far.
    pub fn progress(&self) -> &ImportAnswer {
        &self.answer
    }

    /// Ends the body and waits up to `limit` for the node's answer.
    async fn answer_within(&mut self, limit: Duration) -> Result<ImportAnswer, IpfsError> {
        self.tx = None;
        let Some(task) = self.task.take() else {
            return Err(bad_answer("dag/import", "the request already failed"));
        };
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(bad_answer(
                "dag/import",
                format!("the request task failed: {join}"),
            )),
            Err(_) => Err(self.client.timeout_error("dag/import", limit)),
        }
    }

    /// Why the request stopped taking blocks.
    async fn failure(&mut self) -> IpfsError {
        match self.answer_within(self.client.timeouts.call).await {
            Err(e) => e,
            Ok(_) => bad_answer(
                "dag/import",
                "the node answered before the CAR was complete",
            ),
        }
    }

    /// Appends one block to the CAR being sent. Fails when the node has not read for
    /// [`Timeouts::call`](super::Timeouts::call), or when the request failed.
    pub async fn send(&mut self, cid: &Cid, block: &[u8]) -> Result<(), IpfsError> {
        let mut section = Vec::with_capacity(block.len() + 48);
        car::encode_section_prefix(cid, block.len(), &mut section);
        section.extend_from_slice(block);
        let section_len = section.len() as u64;
        let Some(tx) = &self.tx else {
            return Err(self.failure().await);
        };
        let limit = self.client.timeouts.call;
        match tokio::time::timeout(limit, tx.send(Ok(Bytes::from(section)))).await {
            Ok(Ok(())) => {
                self.answer.blocks_sent += 1;
                self.answer.car_bytes += section_len;
                Ok(())
            }
            Ok(Err(_closed)) => Err(self.failure().await),
            Err(_) => {
                self.tx = None;
                if let Some(task) = self.task.take() {
                    task.abort();
                }
                Err(self
                    .client
                    .timeout_error("dag/import (the node stopped reading the CAR)", limit))
            }
        }
    }

    /// Ends the CAR and waits (up to [`Timeouts::long`](super::Timeouts::long)) for the node's answer.
    pub async fn finish(mut self) -> Result<ImportAnswer, IpfsError> {
        let result = self.answer_within(self.client.timeouts.long).await?;
        if let Some(count) = result.node_block_count {
            if count != self.answer.blocks_sent {
                return Err(bad_answer(
                    "dag/import",
                    format!(
                        "the node counted {count} blocks, {} were sent",
                        self.answer.blocks_sent
                    ),
                ));
            }
        }
        Ok(ImportAnswer {
            node_block_count: result.node_block_count,
            ..self.answer.clone()
        })
    }
}

impl Drop for DagImport {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::client::call::json_values;

    #[test]
    fn import_answers_parse() {
        let parse_import = |body: &[u8]| import_answer(json_values("dag/import", body)?);
        let answer = parse_import(
            b"{\"Root\":{\"Cid\":{\"/\":\"QmX\"},\"PinErrorMsg\":\"\"}}\n{\"Stats\":{\"BlockCount\":3,\"BlockBytesCount\":99}}\n",
        )
        .unwrap();
        assert_eq!(answer.node_block_count, Some(3));
        assert!(
            parse_import(b"{\"Root\":{\"Cid\":{\"/\":\"QmX\"},\"PinErrorMsg\":\"no\"}}").is_err()
        );
        assert_eq!(parse_import(b"").unwrap(), ImportAnswer::default());
    }
}
