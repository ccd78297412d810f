//! Two procs on smol in one process, talking over Unix sockets: a `server` proc running an
//! actor that upper-cases text, and a `client` proc whose instance asks it to, and prints
//! the link events the client's proc saw.
//!
//! ```text
//! cargo run -p procwire-smol --example pair
//! ```

use std::error::Error;

use procwire_smol::{Actor, ActorError, ChannelTransport, Context, PortRef, Proc};

/// Upper-cases text and sends it back to the port that came with it.
struct Upper;

impl Actor for Upper {
    /// The text, and where the answer goes.
    type Message = (String, PortRef<String>);

    async fn handle(
        &mut self,
        cx: &mut Context,
        (text, reply_to): Self::Message,
    ) -> Result<(), ActorError> {
        reply_to.send(cx, text.to_uppercase()).await?;
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

        // The actor's mailbox reference is plain data: it could travel in a message.
        let (upper, upper_handle) = server.spawn("upper", Upper)?;
        let (me, _) = client.instance("main")?;
        let (port, mut answers) = me.open_port::<String>();
        for word in ["hello", "procwire", "on", "smol"] {
            upper.send(&me, (word.to_string(), port.port_ref())).await?;
            println!("{word} -> {}", answers.recv().await?);
        }

        // The first link event: the client's proc connected to the server's.
        if let Some(event) = links.try_recv() {
            println!("link event: {event}");
        }
        upper_handle.stop();
        drop((answers, me));
        println!("client shut down: {:?}", client.shutdown().await);
        println!("server shut down: {:?}", server.shutdown().await);
        Ok(())
    })
}
