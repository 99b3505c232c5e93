//! The systems under test, each started on loopback for one measurement and stopped when its
//! [`Started`] is dropped.

pub mod gossipsub;
pub mod mqtt;
pub mod nats;
pub mod tidings;

use tokio::task::JoinHandle;

use crate::harness::Recorder;

/// A running system: the publisher, the subscriber loops, and what keeps it alive (server
/// processes, swarm tasks, temp dirs, proxies): dropping `guard` stops it all.
pub struct Started<P> {
    pub publisher: P,
    pub handles: Vec<JoinHandle<Option<Recorder>>>,
    pub guard: Box<dyn Send>,
    /// The server processes' ids, whose CPU time the measurement reads; empty when the system
    /// runs inside the bench process (gossipsub).
    pub servers: Vec<u32>,
}

/// Every system the comparison runs, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// nats-server, core publish/subscribe (no acknowledgement, nothing stored).
    Nats,
    /// nats-server with JetStream: file-stored stream, acknowledged publish, ordered consumers;
    /// the server's default sync (fsync on a timer, not before the ack).
    JetStream,
    /// The same with `sync_interval: always`: the server fsyncs before it acknowledges, the
    /// durability tidings promises.
    JetStreamSync,
    /// mosquitto, QoS 0 both ways.
    MqttQos0,
    /// mosquitto with persistence, QoS 1 both ways (PUBACK), persistent subscriber session.
    MqttQos1,
    /// rust-libp2p gossipsub swarms in the bench process.
    Gossipsub,
    /// One `tidings node` broker.
    Tidings1,
    /// Three `tidings node` brokers (rendezvous set of 3: a publish is acked on 2).
    Tidings3,
}

impl System {
    pub const ALL: [System; 8] = [
        System::Nats,
        System::JetStream,
        System::JetStreamSync,
        System::MqttQos0,
        System::MqttQos1,
        System::Gossipsub,
        System::Tidings1,
        System::Tidings3,
    ];

    /// The name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            System::Nats => "nats",
            System::JetStream => "jetstream",
            System::JetStreamSync => "jetstream-sync",
            System::MqttQos0 => "mqtt-qos0",
            System::MqttQos1 => "mqtt-qos1",
            System::Gossipsub => "gossipsub",
            System::Tidings1 => "tidings-1",
            System::Tidings3 => "tidings-3",
        }
    }

    pub fn from_name(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Whether it runs on nats-server (and so needs that binary).
    pub fn nats(self) -> bool {
        matches!(
            self,
            System::Nats | System::JetStream | System::JetStreamSync
        )
    }

    /// Whether a returned publish means the system acknowledged (and stored) the event.
    pub fn acked(self) -> bool {
        matches!(
            self,
            System::JetStream
                | System::JetStreamSync
                | System::MqttQos1
                | System::Tidings1
                | System::Tidings3
        )
    }

    /// Whether the system filters on content in the network (else its subscribers take every
    /// event and filter themselves).
    pub fn filters_content(self) -> bool {
        matches!(self, System::Tidings1 | System::Tidings3)
    }
}
