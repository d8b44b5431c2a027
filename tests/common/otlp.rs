//! An OTLP/HTTP trace collector on loopback for tests of the spans the
//! gateway exports (tests/observe.rs, tests/mcp.rs).

use super::read_request;
use prost::Message;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/HTTP collector on loopback: decodes each export request.
pub struct Collector {
    pub addr: String,
    received: Arc<
        Mutex<Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>>,
    >,
}

impl Collector {
    pub fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || serve_otlp(stream, &sink));
            }
        });
        Collector { addr, received }
    }

    /// Spans received so far, flattened.
    pub fn spans(&self) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        let received = self.received.lock().unwrap();
        let mut out = Vec::new();
        for request in received.iter() {
            for rs in &request.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                    .and_then(|a| a.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

fn serve_otlp(
    stream: std::net::TcpStream,
    sink: &Mutex<Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>>,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some((head, body)) = read_request(&mut reader) {
        assert!(head.starts_with("POST /v1/traces "), "{head}");
        let decoded =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                &body[..],
            )
            .expect("an OTLP protobuf export request");
        sink.lock().unwrap().push(decoded);
        let _ = writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        );
    }
}

pub fn attr(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        V::StringValue(s) => s.clone(),
        V::IntValue(i) => i.to_string(),
        V::BoolValue(b) => b.to_string(),
        V::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

pub fn assert_attrs(span: &opentelemetry_proto::tonic::trace::v1::Span, wanted: &[(&str, &str)]) {
    for (key, value) in wanted {
        assert_eq!(attr(span, key).as_deref(), Some(*value), "{key}");
    }
}

pub fn wait_spans(
    collector: &Collector,
    pred: impl Fn(&[(String, opentelemetry_proto::tonic::trace::v1::Span)]) -> bool,
) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
    // The contract: exported at least every 5 s.
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let spans = collector.spans();
        if pred(&spans) || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
