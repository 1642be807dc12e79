//! The data plane: every worker serves its partitions over Arrow Flight.
//!
//! In: tickets (`<run>/<partition id>`, UTF-8) for `do_get`, a descriptor path of
//! one such key for `do_put`. Out: `list_flights` lists every partition held
//! (ticket, rows, bytes, schema); `do_get` streams a partition's record batches.
//! Must not: read or write files itself (the store does, under the data root),
//! accept a partition it cannot decode, or wait on a transfer any message of
//! which takes longer than `FLIGHT_STALL` (both directions).
//!
//! The in-process shortcut: the workers of an embedded cluster (no fault hook)
//! register their stores here ([`share_in_process`]), and [`Peers::fetch_shared`]
//! takes a partition held by a worker of this process straight from its store
//! (the same `Arc`, no encoding), as the worker's own inputs are taken. Every
//! other address goes through Flight.

use super::FLIGHT_STALL;
use super::auth::Attach;
use super::store::Store;
use crate::runtime::value::Value;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Longest ticket accepted.
const MAX_KEY: usize = 4096;

fn stalled_put() -> Status {
    Status::deadline_exceeded(format!(
        "do_put: no message for {}s (a stalled Flight transfer)",
        FLIGHT_STALL.as_secs()
    ))
}

pub struct FlightStore {
    pub store: Arc<Store>,
}

fn key_of(bytes: &[u8]) -> Result<String, Status> {
    if bytes.is_empty() || bytes.len() > MAX_KEY {
        return Err(Status::invalid_argument("bad ticket length"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| Status::invalid_argument("ticket is not UTF-8"))
}

#[tonic::async_trait]
impl FlightService for FlightStore {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "no handshake: send the token as a bearer header",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let mut infos = Vec::new();
        for l in self.store.list() {
            let info = FlightInfo::new()
                .try_with_schema(&l.schema)
                .map_err(|e| Status::internal(e.to_string()))?
                .with_descriptor(FlightDescriptor::new_path(vec![l.key.clone()]))
                .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(l.key.clone())))
                .with_total_records(l.rows as i64)
                .with_total_bytes(l.bytes as i64);
            infos.push(Ok(info));
        }
        Ok(Response::new(futures::stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("use list_flights"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use list_flights"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("use list_flights"))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let key = key_of(&request.into_inner().ticket)?;
        let value = self
            .store
            .get(&key)
            .map_err(Status::internal)?
            .ok_or_else(|| Status::not_found(format!("no partition `{key}` here")))?;
        let batch = value
            .to_batch()
            .map_err(|e| Status::internal(e.to_string()))?;
        let stream = FlightDataEncoderBuilder::new()
            .build(futures::stream::iter([Ok(batch)]))
            .map_err(Status::from);
        Ok(Response::new(stream.boxed()))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut stream = request.into_inner();
        let first = tokio::time::timeout(FLIGHT_STALL, stream.message())
            .await
            .map_err(|_| stalled_put())??
            .ok_or_else(|| Status::invalid_argument("empty do_put"))?;
        let key = match &first.flight_descriptor {
            Some(d) if d.path.len() == 1 => key_of(d.path[0].as_bytes())?,
            _ => {
                return Err(Status::invalid_argument(
                    "do_put needs a descriptor path of one ticket",
                ));
            }
        };
        let all =
            futures::stream::once(async { Ok(first) }).chain(stream.map_err(FlightError::from));
        let mut batches = FlightRecordBatchStream::new_from_flight_data(all);
        let mut got = Vec::new();
        while let Some(b) = tokio::time::timeout(FLIGHT_STALL, batches.next())
            .await
            .map_err(|_| stalled_put())?
        {
            got.push(b.map_err(Status::from)?);
        }
        let value = one_value(got, batches.schema().cloned()).map_err(Status::invalid_argument)?;
        self.store.put(key, value).map_err(Status::internal)?;
        let done = futures::stream::iter([Ok(PutResult::default())]);
        Ok(Response::new(done.boxed()))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(futures::stream::empty().boxed()))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("no exchange"))
    }
}

/// Batches of one partition → one value.
fn one_value(
    mut batches: Vec<RecordBatch>,
    schema: Option<arrow::datatypes::SchemaRef>,
) -> Result<Value, String> {
    let batch = match batches.len() {
        0 => {
            let schema = schema.ok_or("a partition with no schema")?;
            RecordBatch::new_empty(schema)
        }
        1 => batches.pop().ok_or("no batch")?,
        _ => {
            let schema = batches[0].schema();
            arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())?
        }
    };
    Value::from_batch(batch).map_err(|e| e.to_string())
}

/// The stores of the workers in this process that share their partitions
/// without Flight, by advertised address.
static IN_PROCESS: Mutex<Vec<(String, std::sync::Weak<Store>)>> = Mutex::new(Vec::new());

/// Let workers of this process read `store` directly when they fetch from
/// `addr` (an embedded worker's advertised address).
pub fn share_in_process(addr: &str, store: &Arc<Store>) {
    let mut g = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    g.retain(|(a, s)| a != addr && s.strong_count() > 0);
    g.push((addr.to_string(), Arc::downgrade(store)));
}

/// Stop sharing the store served at `addr` (its worker stopped).
pub fn unshare_in_process(addr: &str) {
    let mut g = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    g.retain(|(a, s)| a != addr && s.strong_count() > 0);
}

fn in_process(addr: &str) -> Option<Arc<Store>> {
    let g = IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
    g.iter()
        .find(|(a, _)| a == addr)
        .and_then(|(_, s)| s.upgrade())
}

/// Flight clients to peers, one channel per address.
#[derive(Clone)]
pub struct Peers {
    attach: Attach,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    pub fn new(attach: Attach) -> Self {
        Peers {
            attach,
            channels: Arc::default(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut g = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get(addr) {
            return Ok(c.clone());
        }
        let c = self.attach.channel(addr).map_err(|e| e.to_string())?;
        g.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Forget a peer's channel (after it failed).
    pub fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    /// Fetch one partition from the worker at `addr`. Fails when the call or
    /// any message of the stream takes longer than [`FLIGHT_STALL`] to arrive
    /// (and sooner when the channel's keepalive finds the peer silent).
    pub async fn fetch(&self, addr: &str, key: &str) -> Result<Value, String> {
        Ok(Arc::unwrap_or_clone(self.fetch_shared(addr, key).await?))
    }

    /// [`Peers::fetch`], taking a partition of a worker in this process from
    /// its store (see [`share_in_process`]).
    pub async fn fetch_shared(&self, addr: &str, key: &str) -> Result<Arc<Value>, String> {
        if let Some(store) = in_process(addr) {
            return store
                .get(key)?
                .ok_or_else(|| format!("no partition `{key}` at {addr}"));
        }
        self.fetch_flight(addr, key).await.map(Arc::new)
    }

    async fn fetch_flight(&self, addr: &str, key: &str) -> Result<Value, String> {
        let stalled = || {
            format!(
                "{addr} sent nothing for {}s (a stalled Flight transfer)",
                FLIGHT_STALL.as_secs()
            )
        };
        let channel = self.channel(addr)?;
        let mut client = FlightServiceClient::with_interceptor(channel, self.attach.clone())
            .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::MAX_MESSAGE_BYTES);
        let stream =
            tokio::time::timeout(FLIGHT_STALL, client.do_get(Ticket::new(key.to_string())))
                .await
                .map_err(|_| stalled())?
                .map_err(|s| s.message().to_string())?
                .into_inner();
        let mut batches =
            FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from));
        let mut got = Vec::new();
        while let Some(b) = tokio::time::timeout(FLIGHT_STALL, batches.next())
            .await
            .map_err(|_| stalled())?
        {
            got.push(b.map_err(|e| e.to_string())?);
        }
        one_value(got, batches.schema().cloned())
    }
}
