//! `OtlpDecoder`: an OTLP/HTTP `ExportMetricsServiceRequest` (protobuf, already decompressed)
//! into the receiver's facts, the answer `sysmetrics.ingest.wire.decode_otlp_python` gives.
//!
//! It reads only the fields the `hostmetrics` and `prometheus` receivers and the OTel SDKs'
//! number metrics send (a field-by-field list below; histograms and summaries are checked, none
//! of their points kept). Anything else (exponential histograms, exemplars, a sum in delta
//! temporality, string-table indexes, a field newer than this list, a wire type that does not
//! match, bytes that are not protobuf, a kept attribute that is not a string, an integer or a
//! boolean) makes it answer None and the Python decoder answers instead: that one decides what
//! is refused, so both stay the same by construction and this one never has to agree on a
//! corner it does not read.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyString, PyTuple};

use crate::fact_key;
use crate::protobuf::{Parsed, Reader};

/// An attribute's value as far as the facts need it. `Other` (a double, an array, a key-value
/// list, bytes) was checked to be well-formed but is not turned into text here.
#[derive(Clone, Copy)]
enum Attribute<'a> {
    Unset,
    Text(&'a str),
    Int(i64),
    Bool(bool),
    Other,
}

/// Python's `str()` of the value, as the Python decoder writes it; None for `Other`.
fn as_text(value: Option<Attribute<'_>>) -> Option<std::borrow::Cow<'_, str>> {
    Some(match value {
        None | Some(Attribute::Unset) => "".into(),
        Some(Attribute::Text(text)) => text.into(),
        Some(Attribute::Int(n)) => n.to_string().into(),
        Some(Attribute::Bool(b)) => (if b { "True" } else { "False" }).into(),
        Some(Attribute::Other) => return None,
    })
}

type Attributes<'a> = Vec<(&'a str, Attribute<'a>)>;

/// The value of `key`; the last one wins, as in the dict the Python decoder builds.
fn last<'a>(attributes: &Attributes<'a>, key: &str) -> Option<Attribute<'a>> {
    attributes.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Deeper than this, None: the Python parser's own limit (100 messages) must decide.
const MAX_DEPTH: u32 = 24;

/// An `AnyValue`'s bytes applied to `value`: a message field repeated on the wire is merged,
/// and in a oneof the last member set wins.
fn any_value<'a>(buf: &'a [u8], value: &mut Attribute<'a>, depth: u32) -> Parsed<()> {
    if depth > MAX_DEPTH {
        return Err(());
    }
    let mut r = Reader::new(buf);
    while !r.done() {
        *value = match r.tag()? {
            (1, 2) => Attribute::Text(r.text()?),
            (2, 0) => Attribute::Bool(r.varint()? != 0),
            (3, 0) => Attribute::Int(r.varint()? as i64),
            (4, 1) => r.take(8).map(|_| Attribute::Other)?,
            (field @ (5 | 6), 2) => {
                // ArrayValue (values: AnyValue) and KeyValueList (values: KeyValue)
                let mut inner = Reader::new(r.bytes()?);
                while !inner.done() {
                    match inner.tag()? {
                        (1, 2) if field == 5 => any_value(inner.bytes()?, &mut Attribute::Unset, depth + 1)?,
                        (1, 2) => key_value(inner.bytes()?, depth + 1).map(|_| ())?,
                        _ => return Err(()),
                    }
                }
                Attribute::Other
            }
            (7, 2) => r.bytes().map(|_| Attribute::Other)?,
            _ => return Err(()),
        };
    }
    Ok(())
}

fn key_value(buf: &[u8], depth: u32) -> Parsed<(&str, Attribute<'_>)> {
    let (mut key, mut value) = ("", Attribute::Unset);
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => key = r.text()?,
            (2, 2) => any_value(r.bytes()?, &mut value, depth + 1)?,
            _ => return Err(()),
        }
    }
    Ok((key, value))
}

#[derive(Clone, Copy)]
enum Number {
    Unset,
    Double(f64),
    Int(i64),
}

struct Point<'a> {
    attributes: Attributes<'a>,
    /// `start_time_unix_nano`, 0 where unset.
    start_ns: u64,
    time_ms: u64,
    number: Number,
    /// `FLAG_NO_RECORDED_VALUE`: OTLP's stale marker, a point that is no reading.
    no_recorded_value: bool,
}

impl Point<'_> {
    /// `point.as_double or float(point.as_int)`: the unset member of the oneof reads 0.
    fn value(&self) -> f64 {
        match self.number {
            Number::Double(d) if d != 0.0 || d.is_nan() => d,
            Number::Int(i) => i as f64,
            _ => 0.0,
        }
    }
}

fn fixed64(r: &mut Reader<'_>) -> Parsed<u64> {
    Ok(u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| ())?))
}

fn number_point(buf: &[u8]) -> Parsed<Point<'_>> {
    let mut point =
        Point { attributes: Vec::new(), start_ns: 0, time_ms: 0, number: Number::Unset, no_recorded_value: false };
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (7, 2) => point.attributes.push(key_value(r.bytes()?, 0)?),
            (2, 1) => point.start_ns = fixed64(&mut r)?,
            (3, 1) => point.time_ms = fixed64(&mut r)? / 1_000_000,
            (4, 1) => point.number = Number::Double(f64::from_bits(fixed64(&mut r)?)),
            (6, 1) => point.number = Number::Int(fixed64(&mut r)? as i64),
            (8, 0) => point.no_recorded_value = r.varint()? & 1 == 1,
            _ => return Err(()),
        }
    }
    Ok(point)
}

#[derive(PartialEq)]
enum Data {
    Unset,
    Gauge,
    Sum,
    /// A histogram or a summary: read for its shape, none of its points is a fact.
    Distribution,
}

struct Metric<'a> {
    name: &'a str,
    data: Data,
    points: Vec<Point<'a>>,
}

/// A `Gauge` (data_points) or a `Sum` (data_points, temporality, monotonic) into `metric`.
fn number_data<'a>(buf: &'a [u8], metric: &mut Metric<'a>, data: Data) -> Parsed<()> {
    if metric.data != data {
        metric.points.clear();
        metric.data = data;
    }
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => metric.points.push(number_point(r.bytes()?)?),
            // AGGREGATION_TEMPORALITY_DELTA: the Python decoder drops and counts its points.
            (2, 0) if metric.data == Data::Sum => {
                if r.varint()? == 1 {
                    return Err(());
                }
            }
            (3, 0) if metric.data == Data::Sum => {
                r.varint()?;
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

/// Packed (or one unpacked) fixed-width values: 8 bytes each.
fn fixed64s(r: &mut Reader<'_>, wire: u8) -> Parsed<()> {
    match wire {
        1 => r.take(8).map(|_| ()),
        2 if r.bytes()?.len() % 8 == 0 => Ok(()),
        _ => Err(()),
    }
}

/// A `HistogramDataPoint` (field 1 of a `Histogram`) or a `SummaryDataPoint` (of a `Summary`),
/// checked field by field as the Python parser would read it; one with exemplars is not read.
fn distribution_point(buf: &[u8], summary: bool) -> Parsed<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        match (r.tag()?, summary) {
            ((9, 2), false) | ((7, 2), true) => key_value(r.bytes()?, 0).map(|_| ())?,
            ((2..=5, 1), _) | ((11 | 12, 1), false) => r.take(8).map(|_| ())?,
            ((6 | 7, wire), false) => fixed64s(&mut r, wire)?,
            ((6, 2), true) => {
                let mut quantile = Reader::new(r.bytes()?);
                while !quantile.done() {
                    match quantile.tag()? {
                        (1 | 2, 1) => quantile.take(8).map(|_| ())?,
                        _ => return Err(()),
                    }
                }
            }
            ((10, 0), false) | ((8, 0), true) => r.varint().map(|_| ())?,
            _ => return Err(()),
        }
    }
    Ok(())
}

/// A `Histogram` or a `Summary` into `metric`: its points are checked, none kept.
fn distribution(buf: &[u8], metric: &mut Metric<'_>, summary: bool) -> Parsed<()> {
    metric.points.clear();
    metric.data = Data::Distribution;
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => distribution_point(r.bytes()?, summary)?,
            (2, 0) if !summary => r.varint().map(|_| ())?,
            _ => return Err(()),
        }
    }
    Ok(())
}

fn metric(buf: &[u8]) -> Parsed<Metric<'_>> {
    let mut metric = Metric { name: "", data: Data::Unset, points: Vec::new() };
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => metric.name = r.text()?,
            (2 | 3, 2) => {
                r.text()?;
            }
            (5, 2) => number_data(r.bytes()?, &mut metric, Data::Gauge)?,
            (7, 2) => number_data(r.bytes()?, &mut metric, Data::Sum)?,
            (9, 2) => distribution(r.bytes()?, &mut metric, false)?,
            (11, 2) => distribution(r.bytes()?, &mut metric, true)?,
            (12, 2) => {
                key_value(r.bytes()?, 0)?;
            }
            _ => return Err(()),
        }
    }
    Ok(metric)
}

fn scope(buf: &[u8]) -> Parsed<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1 | 2, 2) => {
                r.text()?;
            }
            (3, 2) => {
                key_value(r.bytes()?, 0)?;
            }
            (4, 0) => {
                r.varint()?;
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

#[derive(Default)]
struct Resource<'a> {
    attributes: Attributes<'a>,
    metrics: Vec<Metric<'a>>,
}

fn resource_attributes<'a>(buf: &'a [u8], into: &mut Attributes<'a>) -> Parsed<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => into.push(key_value(r.bytes()?, 0)?),
            (2, 0) => {
                r.varint()?;
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

fn scope_metrics<'a>(buf: &'a [u8], into: &mut Vec<Metric<'a>>) -> Parsed<()> {
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => scope(r.bytes()?)?,
            (2, 2) => into.push(metric(r.bytes()?)?),
            (3, 2) => {
                r.text()?;
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

fn resource_metrics(buf: &[u8]) -> Parsed<Resource<'_>> {
    let mut resource = Resource::default();
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => resource_attributes(r.bytes()?, &mut resource.attributes)?,
            (2, 2) => scope_metrics(r.bytes()?, &mut resource.metrics)?,
            (3, 2) => {
                r.text()?;
            }
            _ => return Err(()),
        }
    }
    Ok(resource)
}

fn request(buf: &[u8]) -> Parsed<Vec<Resource<'_>>> {
    let mut out = Vec::new();
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => out.push(resource_metrics(r.bytes()?)?),
            _ => return Err(()),
        }
    }
    Ok(out)
}

/// What the mapping keeps of one metric: its name as a Python string (shared by every fact)
/// and the point attributes the fact keeps, in order.
struct Mapped {
    name: Py<PyString>,
    keep: Vec<String>,
}

/// An exporter's series as a Collector's `prometheus` receiver sends it: its name as the
/// mapping knows it (text and Python string), its source, the labels the fact keeps, and
/// whether only a sum of that name is it (a counter whose `_total` the receiver trimmed).
struct Scraped {
    name_text: String,
    name: Py<PyString>,
    source_text: String,
    source: Py<PyString>,
    keep: Vec<String>,
    sum_only: bool,
}

/// Per resource, for the caller to check in order: (host, its first six attribute names in
/// sorted order, data points counted up to it, whether it had mapped points).
type ResourceCheck = (Option<String>, Vec<String>, usize, bool);

/// (samples, series, dropped, resources, hosts): `hosts` is each distinct host of an
/// exporter's series with the first series name it came with, in order, for the caller to
/// check as remote-write's.
type Answer<'py> = (Bound<'py, PyDict>, usize, usize, Vec<ResourceCheck>, Vec<(String, String)>);

#[pyclass(frozen, module = "sysmetrics_native")]
pub struct OtlpDecoder {
    metrics: HashMap<String, Mapped>,
    resource_fact: Py<PyString>,
    resource_keep: Vec<String>,
    started_metric: String,
    started_fact: Py<PyString>,
    scraped: HashMap<String, Scraped>,
    resource_labels: HashMap<String, String>,
    stale: f64,
}

#[pymethods]
impl OtlpDecoder {
    /// `metrics`: metric name -> data-point attributes kept; `resource_fact` and
    /// `resource_keep`: the fact made of the resource and the attributes it keeps (the tables
    /// `sysmetrics.ingest.mapping` writes once); `started_metric` and `started_fact`: the metric
    /// whose points' start time (Unix seconds) is kept, and the fact it is kept as;
    /// `scraped`: an exporter's series name as sent -> (its name as mapped, source, labels
    /// kept, whether only a sum is it); `resource_labels`: the labels read from the resource
    /// (label -> attribute); `stale`: Prometheus' stale marker, a flagged point's value.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        metrics: &Bound<'_, PyDict>,
        resource_fact: Bound<'_, PyString>,
        resource_keep: Vec<String>,
        started_metric: String,
        started_fact: Bound<'_, PyString>,
        scraped: &Bound<'_, PyDict>,
        resource_labels: HashMap<String, String>,
        stale: f64,
    ) -> PyResult<Self> {
        let mut out = HashMap::new();
        for (name, keep) in metrics.iter() {
            out.insert(
                name.extract::<String>()?,
                Mapped { name: name.downcast_into::<PyString>()?.unbind(), keep: keep.extract()? },
            );
        }
        Ok(OtlpDecoder {
            metrics: out,
            resource_fact: resource_fact.unbind(),
            resource_keep,
            started_metric,
            started_fact: started_fact.unbind(),
            scraped: scraped_table(scraped)?,
            resource_labels,
            stale,
        })
    }

    /// Decode one request: (samples, series, dropped, resources, hosts), see
    /// `decode_otlp_python`, or None where the Python decoder must answer (see the module's
    /// comment).
    fn decode<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        host_attributes: Vec<String>,
        host_label: &str,
    ) -> PyResult<Option<Answer<'py>>> {
        let Ok(resources) = request(data) else { return Ok(None) };
        let samples = PyDict::new(py);
        let (mut series, mut dropped) = (0, 0);
        let mut checks = Vec::with_capacity(resources.len());
        let otel = PyString::new(py, "otel");
        let started = PyTuple::new(py, [self.started_fact.bind(py).as_any(), PyTuple::empty(py).as_any()])?;
        let mut fact_keys: HashMap<(&str, Vec<Cow<'_, str>>), Bound<'py, PyTuple>> = HashMap::new();
        let mut hosts: Vec<(String, String)> = Vec::new();
        let mut seen_hosts: HashSet<Cow<'_, str>> = HashSet::new();
        let mut scraped_samples: HashMap<(Cow<'_, str>, u64, &str), Bound<'py, PyDict>> = HashMap::new();
        for resource in &resources {
            let mut points: Vec<(u64, Bound<'py, PyTuple>, f64)> = Vec::new();
            for metric in &resource.metrics {
                let count = metric.points.len().max(1);
                series += count;
                let Some(mapped) = self.metrics.get(metric.name) else {
                    let scraped = self.scraped.get(metric.name).filter(|s| !s.sum_only || metric.data == Data::Sum);
                    let Some(scraped) = scraped else {
                        dropped += count;
                        continue;
                    };
                    // As `_scraped_points`: keyed as remote-write's, each label read where the
                    // receiver put it.
                    for point in &metric.points {
                        let label = |key: &str| match self.resource_labels.get(key) {
                            Some(attribute) => as_text(last(&resource.attributes, attribute)),
                            None => as_text(last(&point.attributes, key)),
                        };
                        let Some(host) = label(host_label) else { return Ok(None) };
                        let mut texts = Vec::with_capacity(scraped.keep.len());
                        for key in &scraped.keep {
                            let Some(text) = label(key) else { return Ok(None) };
                            texts.push(text);
                        }
                        if seen_hosts.insert(host.clone()) {
                            hosts.push((host.to_string(), scraped.name_text.clone()));
                        }
                        let fact_key = fact_key(py, &mut fact_keys, &scraped.name_text, scraped.name.bind(py), texts)?;
                        let sample_key = (host, point.time_ms, scraped.source_text.as_str());
                        let facts = match scraped_samples.get(&sample_key) {
                            Some(facts) => facts.clone(),
                            None => {
                                let facts = PyDict::new(py);
                                let (host, time, _) = &sample_key;
                                let key = PyTuple::new(
                                    py,
                                    [PyString::new(py, host).as_any(), &time.into_pyobject(py)?.into_any(), scraped.source.bind(py).as_any()],
                                )?;
                                samples.set_item(key, &facts)?;
                                scraped_samples.insert(sample_key, facts.clone());
                                facts
                            }
                        };
                        let value = if point.no_recorded_value { self.stale } else { point.value() };
                        facts.set_item(fact_key, PyFloat::new(py, value))?;
                    }
                    continue;
                };
                for point in metric.points.iter().filter(|p| !p.no_recorded_value) {
                    let mut texts = Vec::with_capacity(mapped.keep.len());
                    for key in &mapped.keep {
                        let Some(text) = as_text(last(&point.attributes, key)) else { return Ok(None) };
                        texts.push(text);
                    }
                    let fact_key = fact_key(py, &mut fact_keys, metric.name, mapped.name.bind(py), texts)?;
                    points.push((point.time_ms, fact_key, point.value()));
                    if point.start_ns != 0 && metric.name == self.started_metric {
                        points.push((point.time_ms, started.clone(), point.start_ns as f64 / 1e9));
                    }
                }
            }
            let attributes = &resource.attributes;
            let mut texts = HashMap::new();
            for key in host_attributes.iter().chain(&self.resource_keep) {
                let Some(text) = as_text(last(attributes, key)) else { return Ok(None) };
                texts.insert(key.as_str(), text);
            }
            let host = host_attributes.iter().find_map(|k| texts.get(k.as_str()).filter(|t| !t.is_empty()));
            let mut names: Vec<&str> = attributes.iter().map(|(k, _)| *k).collect();
            names.sort_unstable();
            names.dedup();
            names.truncate(6);
            checks.push((
                host.map(|h| h.to_string()),
                names.iter().map(|k| k.to_string()).collect(),
                series,
                !points.is_empty(),
            ));
            if points.is_empty() {
                continue;
            }
            let host = PyString::new(py, host.map_or("", |h| h));
            let kept = self.resource_keep.iter().map(|k| PyString::new(py, &texts[k.as_str()]));
            let resource_key = PyTuple::new(py, [self.resource_fact.bind(py).as_any(), PyTuple::new(py, kept)?.as_any()])?;
            // The points of one host within a second of each other are one sample, timed by
            // the earliest (a stable sort keeps the order the metrics came in; a later point
            // of the same fact key wins, as in the Python decoder's dict).
            points.sort_by_key(|(time, _, _)| *time);
            let mut facts: Option<Bound<'py, PyDict>> = None;
            let mut start = 0;
            for (time, fact_key, value) in points {
                if facts.is_none() || time - start > 1000 {
                    start = time;
                    let key = PyTuple::new(py, [host.as_any(), &time.into_pyobject(py)?.into_any(), otel.as_any()])?;
                    let dict = match samples.get_item(&key)? {
                        Some(dict) => dict.downcast_into::<PyDict>()?,
                        None => {
                            let dict = PyDict::new(py);
                            samples.set_item(key, &dict)?;
                            dict
                        }
                    };
                    dict.set_item(&resource_key, 1.0)?;
                    facts = Some(dict);
                }
                if let Some(dict) = &facts {
                    dict.set_item(fact_key, PyFloat::new(py, value))?;
                }
            }
        }
        Ok(Some((samples, series, dropped, checks, hosts)))
    }
}

fn scraped_table(scraped: &Bound<'_, PyDict>) -> PyResult<HashMap<String, Scraped>> {
    let mut out = HashMap::new();
    for (sent, entry) in scraped.iter() {
        let (name, source, keep, sum_only): (Bound<'_, PyString>, Bound<'_, PyString>, Vec<String>, bool) =
            entry.extract()?;
        out.insert(
            sent.extract::<String>()?,
            Scraped {
                name_text: name.to_str()?.to_owned(),
                name: name.unbind(),
                source_text: source.to_str()?.to_owned(),
                source: source.unbind(),
                keep,
                sum_only,
            },
        );
    }
    Ok(out)
}
