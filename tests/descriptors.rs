//! Out of file descriptors: the binary, limited to 64, keeps serving the
//! connections it has, its accept loop backs off instead of spinning, and
//! it accepts again once descriptors free up.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::procfs;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_keeps_serving_does_not_spin_and_recovers() {
    let p = spawn_ssio(
        &["sh", "-c", "ulimit -n 64 && exec \"$0\" \"$@\""],
        0,
        &["--header-timeout", "60000"],
    )
    .await;
    let pid = p.pid;
    let mut a = Sse::connect(p.addr).await;
    a.wait_count(1, WAIT).await;
    // A keep-alive connection opened before the flood.
    let mut kept = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    keep_alive_get(&mut kept, "/stats").await;

    // Flood: far more connections than the server has descriptors for.
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(tokio::net::TcpStream::connect(p.addr).await.unwrap());
    }
    // The server accepts until it runs out; wait (bounded) until it has.
    let deadline = Instant::now() + WAIT;
    let open = loop {
        let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count();
        if open >= 60 || Instant::now() > deadline {
            break open;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        open >= 60,
        "the flood should exhaust the 64 descriptors, {open} open"
    );
    let before = procfs::cpu_time(pid).expect("server gone");
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = procfs::cpu_time(pid).expect("server gone") - before;
    let share = used.as_secs_f64() / t.elapsed().as_secs_f64();
    eprintln!(
        "server CPU while out of descriptors: {used:?} over {:?} ({:.1}%)",
        t.elapsed(),
        share * 100.0
    );
    assert!(share < 0.15, "accept loop spins: {:.1}% CPU", share * 100.0);

    // Existing connections are still served.
    let body = keep_alive_get(&mut kept, "/stats").await;
    assert!(body.contains(r#""sessions":1"#), "{body}");
    assert!(procfs::cpu_time(pid).expect("server gone") >= before);

    // Descriptors free up: new clients are accepted again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut b = loop {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), try_sse(p.addr)).await {
            break s;
        }
        assert!(Instant::now() < deadline, "server never accepted again");
    };
    b.wait_count(2, WAIT).await;
    a.wait_count(2, WAIT).await;
}

async fn try_sse(addr: SocketAddr) -> Result<Sse, ()> {
    tokio::spawn(async move { Sse::connect(addr).await })
        .await
        .map_err(|_| ())
}

/// One GET on an open keep-alive connection; returns the body.
async fn keep_alive_get(s: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let fut = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = header_in(head, "content-length").unwrap().parse().unwrap();
                if body.len() >= len {
                    return body.to_string();
                }
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("keep-alive request timed out")
}
