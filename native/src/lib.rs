//! Compiled codecs for the hot loops the profiles name; each has a pure-Python twin in
//! `sysmetrics` that gives the same answer on the same fixtures (tests/unit run both).
//!
//! `EventValidator` (event_check.rs): vouches that a Kafka message is a valid event, for the
//! lake writer's fast path.
//!
//! `OtlpDecoder` (otlp.rs): an OTLP/HTTP metrics export into the same facts.
//!
//! `RemoteWriteDecoder`: a Prometheus remote-write 1.0 `WriteRequest` or 2.0 `Request` (already
//! decompressed) into the receiver's facts, grouped by (host, sample time, source). The mapping (which
//! series names we keep, their source and the labels each keeps) stays written once in
//! Python and is handed over when the decoder is built.

mod event_check;
mod otlp;
mod protobuf;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyString, PyTuple};

use protobuf::{Parsed, Reader};

struct Series<'a> {
    labels: Vec<(&'a str, &'a str)>,
    samples: Vec<(f64, i64)>,
}

impl<'a> Series<'a> {
    /// The value of label `name`; the last one wins, as in a dict built from the labels.
    fn label(&self, name: &str) -> &'a str {
        self.labels.iter().rev().find(|(k, _)| *k == name).map_or("", |(_, v)| *v)
    }
}

fn parse_label(buf: &[u8]) -> Parsed<(&str, &str)> {
    let (mut name, mut value) = ("", "");
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => name = r.text()?,
            (2, 2) => value = r.text()?,
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok((name, value))
}

fn parse_sample(buf: &[u8]) -> Parsed<(f64, i64)> {
    let (mut value, mut timestamp) = (0.0, 0);
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 1) => value = f64::from_le_bytes(r.take(8)?.try_into().map_err(|_| ())?),
            (2, 0) => timestamp = r.varint()? as i64,
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok((value, timestamp))
}

fn parse_series(buf: &[u8]) -> Parsed<Series<'_>> {
    let mut series = Series { labels: Vec::new(), samples: Vec::new() };
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => series.labels.push(parse_label(r.bytes()?)?),
            (2, 2) => series.samples.push(parse_sample(r.bytes()?)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(series)
}

fn parse_write_request(buf: &[u8]) -> Parsed<Vec<Series<'_>>> {
    let mut out = Vec::new();
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (1, 2) => out.push(parse_series(r.bytes()?)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(out)
}

/// A remote-write 2.0 series: label references into the request's symbols, its samples, and
/// how many native histograms and exemplars it carries (counted for the response, not read).
struct SeriesV2 {
    refs: Vec<u32>,
    samples: Vec<(f64, i64)>,
    histograms: usize,
    exemplars: usize,
}

fn parse_series_v2(buf: &[u8]) -> Parsed<SeriesV2> {
    let mut series = SeriesV2 { refs: Vec::new(), samples: Vec::new(), histograms: 0, exemplars: 0 };
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            // uint32: a wider varint is cut to 32 bits, as protobuf's own parsers do.
            (1, 0) => series.refs.push(r.varint()? as u32),
            (1, 2) => {
                let mut packed = Reader::new(r.bytes()?);
                while !packed.done() {
                    series.refs.push(packed.varint()? as u32);
                }
            }
            (2, 2) => series.samples.push(parse_sample(r.bytes()?)?),
            (3, 2) => {
                r.bytes()?;
                series.histograms += 1;
            }
            (4, 2) => {
                r.bytes()?;
                series.exemplars += 1;
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(series)
}

/// A 2.0 request's series and the native histograms and exemplars it carries.
type RequestV2<'a> = (Vec<Series<'a>>, usize, usize);

/// A remote-write 2.0 `Request` as series with their labels looked up in its symbols; a
/// reference past the symbols or an odd count of them make it no request.
fn parse_request_v2(buf: &[u8]) -> Parsed<RequestV2<'_>> {
    let (mut symbols, mut raw) = (Vec::new(), Vec::new());
    let mut r = Reader::new(buf);
    while !r.done() {
        match r.tag()? {
            (4, 2) => symbols.push(r.text()?),
            (5, 2) => raw.push(parse_series_v2(r.bytes()?)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    let histograms = raw.iter().map(|s| s.histograms).sum();
    let exemplars = raw.iter().map(|s| s.exemplars).sum();
    let symbol = |i: &u32| symbols.get(*i as usize).copied().ok_or(());
    let series = raw
        .into_iter()
        .map(|SeriesV2 { refs, samples, .. }| {
            if refs.len() % 2 != 0 {
                return Err(());
            }
            let labels =
                refs.chunks(2).map(|p| Ok((symbol(&p[0])?, symbol(&p[1])?))).collect::<Parsed<_>>()?;
            Ok(Series { labels, samples })
        })
        .collect::<Parsed<_>>()?;
    Ok((series, histograms, exemplars))
}

/// The Python key of a fact, (name, kept label values), made once per distinct one in a
/// request: the same keys recur on every host (states, devices, directions), and shared
/// strings keep their hash for the assembler's dicts. Both decoders use it.
pub(crate) fn fact_key<'py, 'a, T: AsRef<str> + Eq + Hash>(
    py: Python<'py>,
    known: &mut HashMap<(&'a str, Vec<T>), Bound<'py, PyTuple>>,
    name: &'a str,
    name_object: &Bound<'py, PyString>,
    values: Vec<T>,
) -> PyResult<Bound<'py, PyTuple>> {
    match known.entry((name, values)) {
        Entry::Occupied(found) => Ok(found.get().clone()),
        Entry::Vacant(new) => {
            let texts = PyTuple::new(py, new.key().1.iter().map(|v| PyString::new(py, v.as_ref())))?;
            let key = PyTuple::new(py, [name_object.as_any(), texts.as_any()])?;
            Ok(new.insert(key).clone())
        }
    }
}

/// What the mapping says of one series name: the name and source as Python strings (shared by
/// every fact) and the labels whose values the fact keeps, in order.
struct Mapped {
    name: Py<PyString>,
    source: Py<PyString>,
    source_text: String,
    keep: Vec<String>,
}

/// One (host, time, source) of a request and its facts: (name, kept label values) -> value.
struct Sample<'py, 'm> {
    host: Bound<'py, PyString>,
    timestamp: i64,
    mapped: &'m Mapped,
    facts: Bound<'py, PyDict>,
}

/// (samples, series, dropped, hosts, (values, histograms, exemplars)): see
/// `RemoteWriteDecoder::decode`.
type RemoteWriteAnswer<'py> =
    (Bound<'py, PyDict>, usize, usize, Vec<(String, String)>, (usize, usize, usize));

#[pyclass(frozen, module = "sysmetrics_native")]
struct RemoteWriteDecoder {
    mapping: HashMap<String, Mapped>,
}

#[pymethods]
impl RemoteWriteDecoder {
    /// `mapping`: series name -> (source, labels kept), the table `sysmetrics.ingest.mapping`
    /// writes once.
    #[new]
    fn new(mapping: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut out = HashMap::new();
        for (name, entry) in mapping.iter() {
            let (source, keep): (Bound<'_, PyString>, Vec<String>) = entry.extract()?;
            out.insert(
                name.extract::<String>()?,
                Mapped {
                    name: name.downcast_into::<PyString>()?.unbind(),
                    source_text: source.to_str()?.to_owned(),
                    source: source.unbind(),
                    keep,
                },
            );
        }
        Ok(RemoteWriteDecoder { mapping: out })
    }

    /// Decode one request of remote-write `version` (1: `WriteRequest`, 2: `Request`):
    /// (samples, series, dropped, hosts, (values, histograms, exemplars)). `samples` maps
    /// (host, time ms, source) to {(name, kept label values): value} (a later sample of the
    /// same series wins); `hosts` is each distinct host of a mapped series with the first
    /// series name it came with, in order, for the caller to validate; `values` counts every
    /// float sample of the request, mapped or not, `histograms` and `exemplars` what a 2.0
    /// request carries of those (never read). A body this decoder does not read (not such a
    /// request, or a wire shape no sender uses: a group) raises ValueError("bad_protobuf"),
    /// and the caller asks the Python parser, which decides; more than `max_series` series
    /// raise ValueError("too_many_series", count).
    fn decode<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        host_label: &str,
        max_series: usize,
        version: u8,
    ) -> PyResult<RemoteWriteAnswer<'py>> {
        let parsed = if version == 1 {
            parse_write_request(data).map(|series| (series, 0, 0))
        } else {
            parse_request_v2(data)
        };
        let (request, histograms, exemplars) =
            parsed.map_err(|_| PyValueError::new_err(("bad_protobuf",)))?;
        if request.len() > max_series {
            return Err(PyValueError::new_err(("too_many_series", request.len())));
        }
        let mut dropped = 0;
        let values_count = request.iter().map(|s| s.samples.len()).sum();
        let mut hosts: Vec<(String, String)> = Vec::new();
        // Python objects are made once per distinct host, fact key and sample: a request
        // holds hundreds of series of a few hosts at one time.
        let mut host_objects: HashMap<&str, Bound<'py, PyString>> = HashMap::new();
        let mut fact_keys: HashMap<(&str, Vec<&str>), Bound<'py, PyTuple>> = HashMap::new();
        let mut group_of: HashMap<(&str, i64, &str), usize> = HashMap::new();
        let mut groups: Vec<Sample<'py, '_>> = Vec::new();
        for series in &request {
            let name = series.label("__name__");
            let Some(mapped) = self.mapping.get(name) else {
                dropped += 1;
                continue;
            };
            let host = series.label(host_label);
            let host_object = match host_objects.get(host) {
                Some(object) => object.clone(),
                None => {
                    hosts.push((host.to_owned(), name.to_owned()));
                    let object = PyString::new(py, host);
                    host_objects.insert(host, object.clone());
                    object
                }
            };
            let kept: Vec<&str> = mapped.keep.iter().map(|k| series.label(k)).collect();
            let fact_key = fact_key(py, &mut fact_keys, name, mapped.name.bind(py), kept)?;
            for &(value, timestamp) in &series.samples {
                let group = *group_of.entry((host, timestamp, &mapped.source_text)).or_insert_with(|| {
                    groups.push(Sample { host: host_object.clone(), timestamp, mapped, facts: PyDict::new(py) });
                    groups.len() - 1
                });
                groups[group].facts.set_item(&fact_key, PyFloat::new(py, value))?;
            }
        }
        let samples = PyDict::new(py);
        for Sample { host, timestamp, mapped, facts } in groups {
            let key = PyTuple::new(
                py,
                [host.as_any(), &timestamp.into_pyobject(py)?.into_any(), mapped.source.bind(py).as_any()],
            )?;
            samples.set_item(key, facts)?;
        }
        Ok((samples, request.len(), dropped, hosts, (values_count, histograms, exemplars)))
    }
}

#[pymodule]
fn sysmetrics_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<RemoteWriteDecoder>()?;
    module.add_class::<event_check::EventValidator>()?;
    module.add_class::<otlp::OtlpDecoder>()?;
    Ok(())
}
