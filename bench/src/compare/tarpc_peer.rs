//! tarpc with bincode over TCP, set up as tarpc's README does (`#[tarpc::service]`,
//! `BaseChannel::with_defaults`, `execute(..).for_each(spawn)`, `client::Config::default()`),
//! on a length-delimited framed `TcpStream` like `serde_transport::tcp::connect` builds, with
//! TCP_NODELAY set on both sides (as tonic and Netron do; tarpc's tcp helpers leave Nagle on).

use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tarpc::{client, context};

use super::rt::{self, Flavor};
use super::{DEADLINE, Overhead, Rpc, SIZE, Workload, proxy};

#[allow(missing_docs)]
mod service {
    #[tarpc::service]
    pub trait Echo {
        async fn echo(data: Vec<u8>) -> Vec<u8>;
    }
}

use service::{Echo, EchoClient};

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

fn framed(s: tokio::net::TcpStream) -> tokio_util_framed::Framed {
    s.set_nodelay(true).expect("nodelay");
    LengthDelimitedCodec::builder().new_framed(s)
}

mod tokio_util_framed {
    pub type Framed = tarpc::tokio_util::codec::Framed<
        tokio::net::TcpStream,
        tarpc::tokio_util::codec::LengthDelimitedCodec,
    >;
}

fn server(flavor: Flavor) -> rt::Server {
    rt::serve(flavor, |listener, mut stop| async move {
        loop {
            tokio::select! {
                _ = &mut stop => break,
                r = listener.accept() => {
                    let Ok((s, _)) = r else { continue };
                    let transport = tarpc::serde_transport::new(framed(s), Bincode::default());
                    let channel = BaseChannel::with_defaults(transport);
                    tokio::spawn(channel.execute(EchoServer.serve()).for_each(|f| async move {
                        tokio::spawn(f);
                    }));
                }
            }
        }
    })
}

async fn connect(addr: std::net::SocketAddr) -> EchoClient {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tarpc connect");
    let transport = tarpc::serde_transport::new(framed(s), Bincode::default());
    EchoClient::new(client::Config::default(), transport).spawn()
}

async fn echo(client: &EchoClient) {
    let mut ctx = context::current();
    ctx.deadline = std::time::Instant::now() + DEADLINE;
    let reply = client
        .echo(ctx, vec![0x5a; SIZE])
        .await
        .expect("tarpc call");
    debug_assert_eq!(reply.len(), SIZE);
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
                let c = client.clone();
                async move { echo(&c).await }
            };
            rt::workload(call, &wl2).await
        })
    });
    drop(srv);
    Rpc {
        system: "tarpc",
        mode: flavor.name(),
        lat,
        cpu_ns,
        rates,
    }
}

/// Overhead bytes per call, counted on a proxy between a tarpc client and server. Every
/// tarpc request carries its Context (deadline and trace context), so one count serves both
/// rows.
pub(crate) fn overhead(wl: &Workload) -> Option<Overhead> {
    let flavor = Flavor::CurrentThread;
    let srv = server(flavor);
    let proxy = proxy::Proxy::start(srv.addr);
    let addr = proxy.addr;
    let calls = wl.byte_calls;
    let p = &proxy;
    let per_call = rt::client(flavor, move |rt| {
        rt.block_on(async move {
            let c = connect(addr).await;
            for _ in 0..calls {
                echo(&c).await;
            }
            let before = p.bytes();
            for _ in 0..calls {
                echo(&c).await;
            }
            (p.bytes() - before) as f64 / calls as f64 - 2.0 * SIZE as f64
        })
    });
    drop(proxy);
    drop(srv);
    Some(Overhead {
        deadline: per_call,
        traceparent: per_call,
    })
}
