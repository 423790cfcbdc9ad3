//! tonic (gRPC over HTTP/2), default settings: `Server::builder()` and `Endpoint::connect()`
//! (both with TCP_NODELAY, tonic's default), prost messages.
//!
//! The service code below is what `tonic-prost-build` generates for
//!
//! ```proto
//! syntax = "proto3";
//! package bench;
//! message Blob { bytes data = 1; }
//! service Echo { rpc Echo(Blob) returns (Blob); }
//! ```
//!
//! written out by hand so that the build needs no `protoc`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_prost::ProstCodec;

use super::rt::{self, Flavor};
use super::{DEADLINE, Overhead, Rpc, SIZE, Workload, proxy, traceparent};

/// The request and reply message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Blob {
    /// The payload.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

const PATH: &str = "/bench.Echo/Echo";

/// The server side: echoes the request.
#[derive(Debug, Clone, Copy, Default)]
struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "bench.Echo";
}

struct EchoSvc;

impl tonic::server::UnaryService<Blob> for EchoSvc {
    type Response = Blob;
    type Future = BoxFuture<tonic::Response<Blob>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<Blob>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for EchoServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            PATH => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<Blob, Blob>::default());
                Ok(grpc.unary(EchoSvc, req).await)
            }),
            _ => Box::pin(
                async move { Ok(tonic::Status::unimplemented("no such method").into_http()) },
            ),
        }
    }
}

fn server(flavor: Flavor) -> rt::Server {
    rt::serve(flavor, |listener, stop| async move {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let _ = Server::builder()
            .add_service(EchoServer)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop.await;
            })
            .await;
    })
}

async fn connect(addr: std::net::SocketAddr) -> tonic::client::Grpc<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("tonic connect");
    tonic::client::Grpc::new(channel)
}

async fn echo(client: &mut tonic::client::Grpc<Channel>, trace: Option<u64>) {
    let mut req = tonic::Request::new(Blob {
        data: vec![0x5a; SIZE],
    });
    req.set_timeout(DEADLINE);
    if let Some(i) = trace {
        req.metadata_mut()
            .insert("traceparent", traceparent(i).parse().expect("ascii"));
    }
    client.ready().await.expect("ready");
    let reply: tonic::Response<Blob> = client
        .unary(
            req,
            http::uri::PathAndQuery::from_static(PATH),
            ProstCodec::default(),
        )
        .await
        .expect("tonic call");
    debug_assert_eq!(reply.get_ref().data.len(), SIZE);
}

/// Round trips, CPU per call and pipelined rates with `flavor`.
pub(crate) fn measure(flavor: Flavor, wl: &Workload) -> Rpc {
    let srv = server(flavor);
    let addr = srv.addr;
    let wl2 = *wl;
    let (lat, cpu_ns, rates) = rt::client(flavor, move |rt| {
        rt.block_on(async move {
            let client = connect(addr).await;
            let call = move || {
                let mut c = client.clone();
                async move { echo(&mut c, None).await }
            };
            rt::workload(call, &wl2).await
        })
    });
    drop(srv);
    Rpc {
        system: "tonic",
        mode: flavor.name(),
        lat,
        cpu_ns,
        rates,
    }
}

/// Overhead bytes per call, counted on a proxy between a tonic client and server.
pub(crate) fn overhead(wl: &Workload) -> Option<Overhead> {
    let flavor = Flavor::CurrentThread;
    let srv = server(flavor);
    let proxy = proxy::Proxy::start(srv.addr);
    let addr = proxy.addr;
    let calls = wl.byte_calls;
    let per_call = |trace: bool| {
        let p = &proxy;
        rt::client(flavor, move |rt| {
            rt.block_on(async move {
                let mut c = connect(addr).await;
                for i in 0..calls {
                    echo(&mut c, trace.then_some(i as u64)).await;
                }
                let before = p.bytes();
                for i in 0..calls {
                    echo(&mut c, trace.then_some((calls + i) as u64)).await;
                }
                let after = p.bytes();
                (after - before) as f64 / calls as f64 - 2.0 * SIZE as f64
            })
        })
    };
    let deadline = per_call(false);
    let traceparent = per_call(true);
    drop(proxy);
    drop(srv);
    Some(Overhead {
        deadline,
        traceparent,
    })
}
