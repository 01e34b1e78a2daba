//! The rendezvous torchrun-style launches use before any collective exists: rank 0 listens on
//! MASTER_ADDR:MASTER_PORT and hands every other rank a byte string (NCCL's unique id). Only
//! start-up travels this way; the training traffic is NCCL's.

use base::{Error, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Where rank 0 listens: MASTER_ADDR and MASTER_PORT, as torchrun sets them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRendezvous {
    pub addr: String,
    pub port: u16,
}

impl TcpRendezvous {
    pub fn from_env(rank: usize) -> Result<TcpRendezvous> {
        Self::from_vars(rank, |k| std::env::var(k).ok())
    }

    /// From the variables `get` returns. Recent torchrun keeps its own store on MASTER_PORT
    /// (and says so in TORCHELASTIC_USE_AGENT_STORE); rank 0 then listens on the port after it.
    pub fn from_vars(rank: usize, get: impl Fn(&str) -> Option<String>) -> Result<TcpRendezvous> {
        let var = |k: &str| {
            get(k).ok_or_else(|| {
                Error::dist(
                    rank,
                    format!("{k} is not set, and the NCCL id has no other way to travel"),
                    "launch with torchrun (it sets MASTER_ADDR and MASTER_PORT), or with mpirun and a frugal built with --features mpi,nccl",
                )
            })
        };
        let addr = var("MASTER_ADDR")?;
        let port = var("MASTER_PORT")?;
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        let port = port
            .parse::<u16>()
            .ok()
            .and_then(|p| p.checked_add(agent_store as u16))
            .ok_or_else(|| {
                Error::dist(
                    rank,
                    format!("MASTER_PORT={port:?} is not a usable port number"),
                    "set MASTER_PORT to a free TCP port on the MASTER_ADDR machine",
                )
            })?;
        Ok(TcpRendezvous { addr, port })
    }
}

const MAGIC: &[u8; 8] = b"frugal01";

/// Rank 0's `blob` is copied to every rank's. Each rank gives up after `timeout` (rank 0 while
/// waiting for the others to connect; the others while rank 0 is not yet listening).
pub fn tcp_broadcast(
    at: &TcpRendezvous,
    rank: usize,
    world: usize,
    blob: &mut Vec<u8>,
    timeout: Duration,
) -> Result<()> {
    let fail = |what: String, e: std::io::Error| {
        Error::dist(
            rank,
            format!("{what} ({}:{}): {e}", at.addr, at.port),
            "check MASTER_ADDR and MASTER_PORT on every rank, and that the port is free and reachable",
        )
    };
    let deadline = Instant::now() + timeout;
    if rank == 0 {
        let listener = TcpListener::bind(("0.0.0.0", at.port))
            .map_err(|e| fail("rank 0 cannot listen".into(), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| fail("listener".into(), e))?;
        let mut seen = vec![false; world];
        seen[0] = true;
        while seen.iter().any(|s| !s) {
            let (mut conn, _) = match listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<usize> = (0..world).filter(|&r| !seen[r]).collect();
                        return Err(Error::dist(
                            0,
                            format!("rank(s) {missing:?} did not connect within {timeout:?}"),
                            "those ranks failed to start, or reach another MASTER_ADDR:MASTER_PORT",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => return Err(fail("accept".into(), e)),
            };
            conn.set_nonblocking(false)
                .and_then(|_| conn.set_read_timeout(Some(timeout)))
                .map_err(|e| fail("connection".into(), e))?;
            let mut hello = [0u8; 16];
            conn.read_exact(&mut hello)
                .map_err(|e| fail("a rank's greeting".into(), e))?;
            let peer = u64::from_le_bytes(hello[8..].try_into().expect("8 bytes")) as usize;
            if &hello[..8] != MAGIC || peer == 0 || peer >= world || seen[peer] {
                // Not one of ours (a port scanner, a stale job): ignore it.
                continue;
            }
            seen[peer] = true;
            conn.write_all(&(blob.len() as u64).to_le_bytes())
                .and_then(|_| conn.write_all(blob))
                .map_err(|e| fail(format!("sending to rank {peer}"), e))?;
        }
        return Ok(());
    }
    let addrs: Vec<_> = (at.addr.as_str(), at.port)
        .to_socket_addrs()
        .map_err(|e| fail("MASTER_ADDR does not resolve".into(), e))?
        .collect();
    let mut conn = loop {
        match addrs
            .iter()
            .find_map(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).ok())
        {
            Some(c) => break c,
            None if Instant::now() > deadline => {
                return Err(Error::dist(
                    rank,
                    format!(
                        "rank 0 did not listen on {}:{} within {timeout:?}",
                        at.addr, at.port
                    ),
                    "rank 0 failed to start, or MASTER_ADDR/MASTER_PORT differ between ranks",
                ))
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    conn.set_read_timeout(Some(timeout))
        .map_err(|e| fail("connection".into(), e))?;
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&(rank as u64).to_le_bytes());
    conn.write_all(&hello)
        .map_err(|e| fail("greeting rank 0".into(), e))?;
    let mut len = [0u8; 8];
    conn.read_exact(&mut len)
        .map_err(|e| fail("reading from rank 0".into(), e))?;
    blob.resize(u64::from_le_bytes(len) as usize, 0);
    conn.read_exact(blob)
        .map_err(|e| fail("reading from rank 0".into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a free port of this machine: bound to 0, read, released.
    fn local_rendezvous() -> TcpRendezvous {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        TcpRendezvous {
            addr: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn rank_zeros_bytes_reach_every_rank() {
        let at = local_rendezvous();
        let world = 4;
        let got: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..world)
                .rev() // the others before rank 0 listens: they must retry
                .map(|rank| {
                    let at = at.clone();
                    s.spawn(move || {
                        let mut blob = match rank {
                            0 => (0..200u8).collect(),
                            _ => Vec::new(),
                        };
                        tcp_broadcast(&at, rank, world, &mut blob, Duration::from_secs(20))
                            .unwrap();
                        blob
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for blob in got {
            assert_eq!(blob, (0..200u8).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_rendezvous_comes_from_torchruns_variables() {
        let vars = |agent: bool| {
            move |k: &str| match k {
                "MASTER_ADDR" => Some("node0".to_string()),
                "MASTER_PORT" => Some("29500".to_string()),
                "TORCHELASTIC_USE_AGENT_STORE" if agent => Some("True".to_string()),
                _ => None,
            }
        };
        let at = TcpRendezvous::from_vars(1, vars(false)).unwrap();
        assert_eq!((at.addr.as_str(), at.port), ("node0", 29500));
        // torchrun's own store holds MASTER_PORT: the next port is ours.
        assert_eq!(TcpRendezvous::from_vars(1, vars(true)).unwrap().port, 29501);
        let e = TcpRendezvous::from_vars(3, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 3") && e.contains("MASTER_ADDR"), "{e}");
    }

    #[test]
    fn a_missing_rank_is_named_after_the_timeout() {
        let at = local_rendezvous();
        let e = tcp_broadcast(&at, 0, 3, &mut vec![1], Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank(s) [1, 2] did not connect"), "{e}");
        let e = tcp_broadcast(&at, 2, 3, &mut vec![], Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 2") && e.contains("did not listen"), "{e}");
    }
}
