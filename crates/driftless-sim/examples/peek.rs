use driftless_sim::{Architecture, Params, simulate, summary};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arch = Architecture::parse(&args[2]).unwrap();
    let mut p = Params::scenario(&args[1], arch, 1).unwrap();
    if let Some(n) = args.get(3) {
        p.skus = n.parse().unwrap();
    }
    let t = std::time::Instant::now();
    let o = simulate(&p).unwrap();
    print!("{}", summary::render_text(&o.summary));
    eprintln!("{:?}", t.elapsed());
    if let Some(dir) = args.get(4) {
        driftless_sim::files::write_dir(std::path::Path::new(dir), &o.files()).unwrap();
    }
}
