//! Serving the simulator on a real socket.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::SimConfig;
use crate::simulator::{Credentials, Simulator, Stats};

/// A simulator serving HTTP on a loopback socket. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningSimulator {
    simulator: Simulator,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

/// Creates a simulator and serves it on `127.0.0.1` with a free port.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default()).await?;
/// assert!(sim.base_url().starts_with("http://127.0.0.1:"));
/// assert_eq!(sim.token_url(), format!("{}/o/token/", sim.base_url()));
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// When the socket cannot be bound.
pub async fn spawn(config: SimConfig) -> io::Result<RunningSimulator> {
    Simulator::new(config)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
}

impl Simulator {
    /// Serves this simulator on `addr` (use port 0 for a free one) until the returned
    /// handle is dropped or shut down.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn serve(self, addr: SocketAddr) -> io::Result<RunningSimulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let router = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    // Either an explicit shutdown or the handle being dropped.
                    let _ = signal.await;
                })
                .await
        });
        Ok(RunningSimulator {
            simulator: self,
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }
}

impl RunningSimulator {
    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/o/token/`.
    pub fn token_url(&self) -> String {
        format!("{}/o/token/", self.base_url())
    }

    /// The application's credentials and starting refresh token.
    pub fn credentials(&self) -> Credentials {
        self.simulator.credentials()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.simulator.stats()
    }

    /// The simulator behind the socket.
    pub fn simulator(&self) -> &Simulator {
        &self.simulator
    }

    /// Stops accepting connections and waits for open ones to finish.
    ///
    /// # Errors
    /// When the server failed while running.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Serves until the server fails (the binary's main loop).
    ///
    /// # Errors
    /// When the server failed while running.
    pub async fn wait(mut self) -> io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
