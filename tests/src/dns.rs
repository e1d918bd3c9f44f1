//! A DNS server the tests control: it answers A queries for one name with the addresses a
//! test sets (and changes) on UDP, built on hickory-proto's message types, so B's discovery
//! is tested through real DNS without touching the machine's `/etc/hosts`. Other names get
//! NXDOMAIN; AAAA queries for the name get no records.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The running server.
#[derive(Debug, Clone)]
pub struct TestDns {
    /// Where it listens (`127.0.0.1:<port>`).
    pub addr: SocketAddr,
    name: Name,
    addresses: Arc<Mutex<Vec<Ipv4Addr>>>,
}

impl TestDns {
    /// A server for `name` (e.g. `service-a.fleet.test`) answering `addresses`.
    pub fn start(name: &str, addresses: &[Ipv4Addr]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let mut name = Name::from_ascii(name).expect("a DNS name");
        name.set_fqdn(true);
        let dns = Self {
            addr: socket.local_addr().expect("addr"),
            name,
            addresses: Arc::new(Mutex::new(addresses.to_vec())),
        };
        let server = dns.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok((read, from)) = socket.recv_from(&mut buffer) {
                if let Some(answer) = server.answer(&buffer[..read]) {
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        dns
    }

    /// Answers `addresses` from now on.
    pub fn set(&self, addresses: &[Ipv4Addr]) {
        *self.addresses.lock().expect("addresses") = addresses.to_vec();
    }

    fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let query = Message::from_vec(query).ok()?;
        let question = query.queries.first()?.clone();
        let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
        answer.metadata.recursion_desired = query.metadata.recursion_desired;
        answer.add_query(question.clone());
        if !question.name().eq_ignore_root_case(&self.name) {
            answer.metadata.response_code = ResponseCode::NXDomain;
        } else if question.query_type() == RecordType::A {
            for ip in self.addresses.lock().expect("addresses").iter() {
                answer.add_answer(Record::from_rdata(self.name.clone(), 0, RData::A(A(*ip))));
            }
        }
        answer.to_vec().ok()
    }
}
