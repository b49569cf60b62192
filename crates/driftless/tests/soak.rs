//! The kill -9 soak (`examples/soak.rs`), short: 5 SIGKILLs of the real `serve` under concurrent
//! clients that resend the same ids until acknowledged; nothing acknowledged is lost, nothing is
//! applied twice, and every level equals the soak's own oracle.

#[path = "../examples/soak.rs"]
mod soak;

#[test]
fn five_kills_lose_nothing_and_apply_nothing_twice() {
    let mut o = soak::Options::new(env!("CARGO_BIN_EXE_driftless").into());
    o.kills = 5;
    o.clients = 4;
    o.skus = 12;
    o.up_ms = (150, 700);
    let f = soak::run(&o).unwrap();
    println!("{f}");
    assert_eq!(f.kills, 5);
    assert!(f.events > 0 && f.acknowledged_before_a_kill > 0, "{f}");
    assert!(f.ok(), "{f}");
}
