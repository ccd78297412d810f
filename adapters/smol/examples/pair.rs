//! Two procs on smol in one process, talking over Unix sockets: a `server` proc running an
//! actor that upper-cases text and counts what it did (two message types, one port each),
//! and a `client` proc whose instance reaches it by its id alone, and prints the link
//! events the client's proc saw.
//!
//! ```text
//! cargo run -p procwire-smol --example pair
//! ```

use std::error::Error;

use procwire_smol::{
    messages, Actor, ActorError, ActorId, ActorRef, ChannelTransport, Context, PortRef, Proc,
};

messages! {
    /// What `Upper` takes: text to upper-case with where the answer goes (its first port),
    /// or a request for how many texts it has done (its second).
    enum UpperMsg {
        Text((String, PortRef<String>)),
        Count(PortRef<u64>),
    }
}

/// Upper-cases text and sends it back to the port that came with it.
#[derive(Default)]
struct Upper {
    done: u64,
}

impl Actor for Upper {
    type Message = UpperMsg;

    async fn handle(&mut self, cx: &mut Context, msg: UpperMsg) -> Result<(), ActorError> {
        match msg {
            UpperMsg::Text((text, reply_to)) => {
                self.done += 1;
                reply_to.send(cx, text.to_uppercase()).await?;
            }
            UpperMsg::Count(reply_to) => reply_to.send(cx, self.done).await?,
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    smol::block_on(async {
        // Each proc binds a fresh abstract Unix name (`unix:@` means "pick one").
        let server = Proc::direct(ChannelTransport::Unix.any(), "server".to_string()).await?;
        let client = Proc::direct(ChannelTransport::Unix.any(), "client".to_string()).await?;
        println!("server {}", server.proc_id());
        println!("client {}", client.proc_id());
        let mut links = client.link_events();

        let (_, upper_handle) = server.spawn("upper", Upper::default())?;
        // Its id is all another proc needs (here as text, as from a command line): the
        // ports of its message types follow from it.
        let id: ActorId = upper_handle.actor_id().to_string().parse()?;
        let upper = ActorRef::<Upper>::attest(id);
        let (me, _) = client.instance("main")?;
        let (port, mut answers) = me.open_port::<String>();
        for word in ["hello", "procwire", "on", "smol"] {
            upper.send(&me, (word.to_string(), port.port_ref())).await?;
            println!("{word} -> {}", answers.recv().await?);
        }
        let (count, mut counts) = me.open_port::<u64>();
        upper.send(&me, count.port_ref()).await?;
        println!("upper-cased {} texts", counts.recv().await?);

        // The client's proc connected to the server's, and the server's (sending the
        // answers) to the client's.
        while let Some(event) = links.try_recv() {
            println!("link event: {event}");
        }
        upper_handle.stop();
        drop((answers, counts, me));
        println!("client shut down: {:?}", client.shutdown().await);
        println!("server shut down: {:?}", server.shutdown().await);
        Ok(())
    })
}
