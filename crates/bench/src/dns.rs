//! `rkube-bench dns`: queries per second and latency of the cluster DNS server for in-cluster names, with
//! the load generator on the same machine (as CoreDNS' published figure: 33.7k QPS on 2 vCPU).
//!
//! The server is `rkube_dns`'s real handler and transport on 127.0.0.1, over an index filled with
//! `--services` ClusterIP Services and `--headless` headless Services of `--endpoints` ready endpoints each
//! (the index is what the watches would build; the API server is not part of what is measured). The load
//! generator is `--client-threads` threads, each with `--sockets` UDP sockets keeping `--window` queries in
//! flight. The names are a pod's mix: a Service's A record (60 %), a headless Service's endpoints (20 %), and
//! NXDOMAINs of the search path (20 %: `<svc>.<ns>.svc.cluster.local.<ns>.svc.cluster.local`). Every
//! answer's response code is checked; a query unanswered after 1 s counts as lost.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use rkube_dns::index::{EpEntry, Index, Kind, Object, PortEntry, SliceEntry, SvcEntry};
use rkube_dns::{DnsConfig, Listeners, server};

const NAMESPACE: &str = "bench-dns";
const LOST_AFTER: Duration = Duration::from_secs(1);

#[derive(Args, Debug, Clone)]
pub struct DnsArgs {
    /// ClusterIP Services in the index.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Headless Services in the index.
    #[arg(long, default_value_t = 100)]
    headless: usize,
    /// Ready endpoints per headless Service.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// Seconds of measurement (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Worker threads of the DNS server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// UDP sockets per load generator thread.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// Queries in flight per socket.
    #[arg(long, default_value_t = 16)]
    window: usize,
}

/// The index the watches would build for the benchmark's cluster.
fn build_index(args: &DnsArgs) -> Index {
    let mut index = Index::default();
    index.replace(Kind::Namespace, vec![Object::Namespace(NAMESPACE.into())]);
    let port = PortEntry {
        name: "http".into(),
        protocol: "TCP".into(),
        port: 80,
    };
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..args.services {
        let ip = Ipv4Addr::new(10, 43, (1 + i / 250) as u8, (i % 250) as u8 + 1);
        services.push(Object::Service {
            ns: NAMESPACE.into(),
            name: format!("svc-{i}"),
            entry: SvcEntry {
                cluster_ips: vec![IpAddr::V4(ip)],
                ports: vec![port.clone()],
                ..Default::default()
            },
        });
    }
    for i in 0..args.headless {
        let name = format!("headless-{i}");
        services.push(Object::Service {
            ns: NAMESPACE.into(),
            name: name.clone(),
            entry: SvcEntry {
                headless: true,
                ports: vec![port.clone()],
                ..Default::default()
            },
        });
        let endpoints = (0..args.endpoints)
            .map(|e| EpEntry {
                ip: IpAddr::V4(Ipv4Addr::new(10, 42, (i % 250) as u8, (e % 250) as u8 + 1)),
                hostname: None,
                ready: true,
                pod: None,
            })
            .collect();
        slices.push(Object::Slice {
            ns: NAMESPACE.into(),
            name: format!("{name}-abcde"),
            entry: SliceEntry {
                service: name,
                endpoints,
                ports: vec![port.clone()],
            },
        });
    }
    index.replace(Kind::Service, services);
    index.replace(Kind::EndpointSlice, slices);
    index.replace(Kind::Pod, Vec::new());
    index
}

/// The query mix, as ready-to-send packets (ID 0, patched per send) and the response code each expects.
fn query_mix(args: &DnsArgs) -> anyhow::Result<Vec<(Vec<u8>, ResponseCode)>> {
    let mut mix = Vec::new();
    let zone = "cluster.local";
    for i in 0..100usize {
        let (name, rcode) = match i % 10 {
            0..=5 => (
                format!("svc-{}.{NAMESPACE}.svc.{zone}.", i * 7 % args.services.max(1)),
                ResponseCode::NoError,
            ),
            6 | 7 if args.headless > 0 => (
                format!("headless-{}.{NAMESPACE}.svc.{zone}.", i % args.headless),
                ResponseCode::NoError,
            ),
            _ => (
                format!("svc-{i}.{NAMESPACE}.svc.{zone}.{NAMESPACE}.svc.{zone}."),
                ResponseCode::NXDomain,
            ),
        };
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(&name)?, RecordType::A));
        mix.push((m.to_vec()?, rcode));
    }
    Ok(mix)
}

struct ClientResult {
    latency: Histogram<u64>,
    answered: u64,
    wrong: u64,
    lost: u64,
}

/// One socket's loop: keep `window` queries in flight, match answers by ID, until `stop`.
async fn drive_socket(
    server: SocketAddr,
    mix: Arc<Vec<(Vec<u8>, ResponseCode)>>,
    window: usize,
    offset: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<ClientResult> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(server).await?;
    let mut result = ClientResult {
        latency: Histogram::new_with_bounds(1, 10_000_000, 3)?,
        answered: 0,
        wrong: 0,
        lost: 0,
    };
    // In flight by ID (the slot index): when sent, which query.
    let mut in_flight: Vec<Option<(Instant, usize)>> = vec![None; window];
    let mut next = offset;
    let mut buf = vec![0u8; 4096];
    let send = |slot: usize, query: usize| {
        let mut packet = mix[query].0.clone();
        packet[..2].copy_from_slice(&(slot as u16).to_be_bytes());
        packet
    };
    for (slot, entry) in in_flight.iter_mut().enumerate() {
        let q = next % mix.len();
        next += 1;
        socket.send(&send(slot, q)).await?;
        *entry = Some((Instant::now(), q));
    }
    while !stop.load(Ordering::Relaxed) {
        let n = match tokio::time::timeout(LOST_AFTER, socket.recv(&mut buf)).await {
            Ok(n) => n?,
            Err(_) => {
                // Everything outstanding is lost: count it and refill the window.
                for (slot, entry) in in_flight.iter_mut().enumerate() {
                    if entry.take().is_some() && measuring.load(Ordering::Relaxed) {
                        result.lost += 1;
                    }
                    let q = next % mix.len();
                    next += 1;
                    socket.send(&send(slot, q)).await?;
                    *entry = Some((Instant::now(), q));
                }
                continue;
            }
        };
        if n < 12 {
            continue;
        }
        let slot = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
        let Some((sent, query)) = in_flight.get_mut(slot).and_then(Option::take) else {
            continue;
        };
        let rcode = buf[3] & 0x0f;
        if measuring.load(Ordering::Relaxed) {
            let micros = sent.elapsed().as_micros().max(1) as u64;
            result.latency.saturating_record(micros);
            result.answered += 1;
            if u16::from(rcode) != u16::from(mix[query].1) {
                result.wrong += 1;
            }
        }
        let q = next % mix.len();
        next += 1;
        socket.send(&send(slot, q)).await?;
        in_flight[slot] = Some((Instant::now(), q));
    }
    Ok(result)
}

pub async fn run(args: DnsArgs) -> anyhow::Result<()> {
    let index = build_index(&args);
    let mix = Arc::new(query_mix(&args)?);

    // The server in its own runtime with its own threads, as in a node agent.
    let mut config = DnsConfig::new(vec!["127.0.0.1:0".parse()?]);
    config.upstreams = Vec::new();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .enable_all()
        .build()?;
    // Sockets belong to the runtime they are created in: bind on the server's.
    let listen = config.listen.clone();
    let listeners = server_rt
        .spawn(async move { Listeners::bind(&listen).await })
        .await??;
    let addr = listeners.local_addrs()[0];
    let handler = config.handler(index.shared())?;
    let (stop_server, stop_rx) = tokio::sync::watch::channel(false);
    server_rt.spawn(server::serve(listeners, handler, stop_rx));
    println!(
        "dns server on {addr}: {} services, {} headless × {} endpoints; {} server threads",
        args.services, args.headless, args.endpoints, args.server_threads
    );

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..args.client_threads {
        let (mix, measuring, stop, args) = (mix.clone(), measuring.clone(), stop.clone(), args.clone());
        threads.push(std::thread::spawn(
            move || -> anyhow::Result<Vec<ClientResult>> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let mut tasks = Vec::new();
                    for s in 0..args.sockets {
                        let offset = (t * args.sockets + s) * 13;
                        tasks.push(tokio::spawn(drive_socket(
                            addr,
                            mix.clone(),
                            args.window,
                            offset,
                            measuring.clone(),
                            stop.clone(),
                        )));
                    }
                    let mut results = Vec::new();
                    for task in tasks {
                        results.push(task.await??);
                    }
                    Ok(results)
                })
            },
        ));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);

    let mut latency = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let (mut answered, mut wrong, mut lost) = (0u64, 0u64, 0u64);
    for thread in threads {
        let results = thread
            .join()
            .map_err(|_| anyhow::anyhow!("load generator thread panicked"))??;
        for r in results {
            latency.add(&r.latency).context("merge histograms")?;
            answered += r.answered;
            wrong += r.wrong;
            lost += r.lost;
        }
    }
    let _ = stop_server.send(true);
    server_rt.shutdown_background();

    let qps = answered as f64 / elapsed.as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{answered} answers in {:.1} s: {qps:.0} QPS, p50 {:.3} ms, p99 {:.3} ms, {wrong} wrong, {lost} lost",
        elapsed.as_secs_f64(),
        ms(0.5),
        ms(0.99)
    );
    let json = serde_json::json!({
        "bench": "dns",
        "qps": qps.round(),
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": latency.max() as f64 / 1000.0,
        "answered": answered,
        "wrong_rcode": wrong,
        "lost": lost,
        "services": args.services,
        "headless": args.headless,
        "endpoints": args.endpoints,
        "server_threads": args.server_threads,
        "client_threads": args.client_threads,
        "in_flight": args.client_threads * args.sockets * args.window,
        "duration_s": elapsed.as_secs_f64(),
    });
    println!("{json}");
    if wrong > 0 {
        anyhow::bail!("{wrong} answers had the wrong response code");
    }
    Ok(())
}
