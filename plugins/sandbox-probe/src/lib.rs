//! `sandbox-probe`: tries what a handler should not be able to do — read files,
//! list the environment and arguments, open sockets — and what it may — read
//! the clocks, draw random bytes — and answers a request on `test.sandbox`
//! with what happened, as JSON. The tests assert WASI is deny-by-default.

use std::io::Read as _;

fn outcome<T>(result: std::io::Result<T>) -> String {
    match result {
        Ok(_) => "allowed".to_owned(),
        Err(e) => format!("denied: {e}"),
    }
}

fn probe(event: weir_sdk::Event) -> weir_sdk::Result {
    let target = event.text()?.trim().to_owned(); // e.g. "127.0.0.1:4222"
    let read_file = outcome(std::fs::File::open("/etc/passwd").and_then(|mut f| {
        let mut s = String::new();
        f.read_to_string(&mut s)
    }));
    let list_root = outcome(std::fs::read_dir("/"));
    let list_cwd = outcome(std::fs::read_dir("."));
    let connect = outcome(std::net::TcpStream::connect(target.as_str()));
    let env_vars = std::env::vars().count();
    let args = std::env::args().count();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut random = [0u8; 16];
    let random_ok = getrandom_fill(&mut random);
    let report = weir_sdk::serde_json::json!({
        "read_file": read_file,
        "list_root": list_root,
        "list_cwd": list_cwd,
        "connect": connect,
        "env_vars": env_vars,
        "args": args,
        "wall_clock_secs": wall,
        "random_nonzero": random_ok && random.iter().any(|b| *b != 0),
    });
    Ok(event.reply(report.to_string()).into_iter().collect())
}

/// Random bytes through std's hasher seed source (wasi:random underneath).
fn getrandom_fill(buf: &mut [u8]) -> bool {
    use std::hash::{BuildHasher, Hasher};
    for chunk in buf.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    true
}

weir_sdk::handler!(probe);
