//! [`Adapter`] and [`TestProc`] for procwire-tokio and procwire-smol, and runners.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_executor::Executor;
use procwire_smol::{
    Actor, ActorHandle, ActorRef, ChannelAddr, Held, Instance, LinkEvents, ProcError, ProcId,
    ProcOptions, Refusals, ShutdownReport, Stats,
};

use crate::{Adapter, TestProc};

macro_rules! test_proc {
    ($proc:ty) => {
        impl TestProc for $proc {
            fn instance(&self, name: &str) -> Result<(Instance, ActorHandle), ProcError> {
                <$proc>::instance(self, name)
            }
            fn spawn<A: Actor>(
                &self,
                name: &str,
                actor: A,
            ) -> Result<(ActorRef<A>, ActorHandle), ProcError> {
                <$proc>::spawn(self, name, actor)
            }
            fn proc_id(&self) -> &ProcId {
                <$proc>::proc_id(self)
            }
            fn addr(&self) -> &ChannelAddr {
                <$proc>::addr(self)
            }
            fn set_address(&self, proc: ProcId, addr: ChannelAddr) {
                <$proc>::set_address(self, proc, addr)
            }
            fn link_events(&self) -> LinkEvents {
                <$proc>::link_events(self)
            }
            fn stats(&self) -> Stats {
                <$proc>::stats(self)
            }
            fn connection_count(&self) -> usize {
                <$proc>::connection_count(self)
            }
            fn refusals(&self) -> Refusals {
                <$proc>::refusals(self)
            }
            fn held(&self) -> Held {
                <$proc>::held(self)
            }
            fn shutdown(&self) -> impl Future<Output = ShutdownReport> + Send {
                <$proc>::shutdown(self)
            }
            fn kill(&self) -> impl Future<Output = ()> + Send {
                <$proc>::kill(self)
            }
        }
    };
}

test_proc!(procwire_tokio::Proc);
test_proc!(procwire_smol::Proc);

/// procwire-tokio, on the tokio runtime current when the adapter was made.
#[derive(Clone)]
pub struct TokioAdapter {
    handle: tokio::runtime::Handle,
}

impl TokioAdapter {
    /// The current tokio runtime's adapter (panics outside one).
    pub fn current() -> Self {
        TokioAdapter {
            handle: tokio::runtime::Handle::current(),
        }
    }
}

impl Adapter for TokioAdapter {
    type Proc = procwire_tokio::Proc;

    fn name(&self) -> &'static str {
        "tokio"
    }

    async fn start(
        &self,
        addr: ChannelAddr,
        name: &str,
        options: ProcOptions,
    ) -> Result<procwire_tokio::Proc, ProcError> {
        // `Proc::direct_with` must run inside the runtime; the caller may be on any executor.
        let name = name.to_string();
        let task = self
            .handle
            .spawn(async move { procwire_tokio::Proc::direct_with(addr, name, options).await });
        match task.await {
            Ok(r) => r,
            Err(e) => panic!("tokio proc start task failed: {e}"),
        }
    }

    fn live_tasks(&self) -> usize {
        self.handle.metrics().num_alive_tasks()
    }
}

/// procwire-smol, with its procs' tasks on a given executor (or smol's global one).
#[derive(Clone)]
pub struct SmolAdapter {
    executor: Option<Arc<Executor<'static>>>,
}

impl SmolAdapter {
    /// Tasks on `executor`, which the caller runs.
    pub fn on(executor: Arc<Executor<'static>>) -> Self {
        SmolAdapter {
            executor: Some(executor),
        }
    }

    /// Tasks on smol's global executor (their count cannot be observed).
    pub fn global() -> Self {
        SmolAdapter { executor: None }
    }
}

impl Adapter for SmolAdapter {
    type Proc = procwire_smol::Proc;

    fn name(&self) -> &'static str {
        "smol"
    }

    async fn start(
        &self,
        addr: ChannelAddr,
        name: &str,
        options: ProcOptions,
    ) -> Result<procwire_smol::Proc, ProcError> {
        match &self.executor {
            Some(ex) => procwire_smol::Proc::direct_on(ex, addr, name.to_string(), options).await,
            None => procwire_smol::Proc::direct_with(addr, name.to_string(), options).await,
        }
    }

    fn live_tasks(&self) -> usize {
        match &self.executor {
            Some(ex) => usize::from(!ex.is_empty()),
            None => 0,
        }
    }
}

/// Runs `body` on a fresh executor driven by this thread alone: the test's code and every
/// task of its smol procs share one thread.
pub fn run_smol<F, Fut>(body: F) -> Fut::Output
where
    F: FnOnce(SmolAdapter) -> Fut,
    Fut: Future,
{
    crate::init_logging();
    let ex = Arc::new(Executor::new());
    let fut = body(SmolAdapter::on(ex.clone()));
    async_io::block_on(ex.run(fut))
}

/// Runs `body` on a fresh two-worker multi-threaded tokio runtime (as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` does), with an adapter on it.
pub fn run_tokio<F, Fut>(body: F) -> Fut::Output
where
    F: FnOnce(TokioAdapter) -> Fut,
    Fut: Future,
{
    crate::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async { body(TokioAdapter::current()).await })
}

/// An executor run by a thread of its own until dropped.
pub struct SmolThread {
    executor: Arc<Executor<'static>>,
    stop: Option<async_channel_lite::Sender>,
    thread: Option<JoinHandle<()>>,
}

impl SmolThread {
    /// Starts the thread.
    pub fn start() -> Self {
        let executor = Arc::new(Executor::new());
        let (stop, stopped) = async_channel_lite::pair();
        let ex = executor.clone();
        let thread = std::thread::Builder::new()
            .name("smol-procs".to_string())
            .spawn(move || async_io::block_on(ex.run(stopped.wait())))
            .expect("spawn the executor thread");
        SmolThread {
            executor,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// An adapter whose procs run their tasks on this thread.
    pub fn adapter(&self) -> SmolAdapter {
        SmolAdapter::on(self.executor.clone())
    }
}

impl Drop for SmolThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A one-shot stop signal without another dependency: dropping the sender completes the
/// receiver's wait.
mod async_channel_lite {
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};

    struct State {
        done: bool,
        waker: Option<Waker>,
    }

    pub struct Sender(Arc<Mutex<State>>);
    pub struct Receiver(Arc<Mutex<State>>);

    pub fn pair() -> (Sender, Receiver) {
        let s = Arc::new(Mutex::new(State {
            done: false,
            waker: None,
        }));
        (Sender(s.clone()), Receiver(s))
    }

    impl Drop for Sender {
        fn drop(&mut self) {
            let w = {
                let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
                st.done = true;
                st.waker.take()
            };
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    impl Receiver {
        pub async fn wait(self) {
            std::future::poll_fn(|cx| {
                let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
                if st.done {
                    Poll::Ready(())
                } else {
                    st.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await
        }
    }
}
