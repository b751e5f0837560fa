//! `order-totals [BOOTSTRAP_SERVERS] [STATE_DIR]`: creates the topics and runs the pipeline
//! until Ctrl-C (defaults `127.0.0.1:9092`, `.order-totals/state`). See the README.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_streams::KafkaStreams;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let servers = args.next().unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let state_dir = args.next().map_or_else(|| PathBuf::from(".order-totals/state"), PathBuf::from);
    match run(&servers, state_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("order-totals: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(servers: &str, state_dir: PathBuf) -> Result<(), String> {
    let topology = order_totals::topology();
    let config = order_totals::config(servers, state_dir);
    let io = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    io.block_on(sluice_streams::admin::create_topics(servers, &topology.topics_to_create(&config.application_id))).map_err(|e| e.to_string())?;
    let streams = KafkaStreams::new(topology, order_totals::registry(), config).map_err(|e| e.to_string())?;
    let shutdown = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let running = scope.spawn(|| streams.run(&shutdown));
        eprintln!("order-totals: running against {servers}; Ctrl-C stops");
        io.block_on(async {
            // Either Ctrl-C, or the runtime stopped on its own (an error).
            while !running.is_finished() {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
        });
        shutdown.store(true, Ordering::SeqCst);
        running.join().map_err(|_| "the stream thread panicked".to_string())?.map_err(|e| e.to_string())
    })
}
