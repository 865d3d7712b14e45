//! Reading a `ModelProto` from disk.
//!
//! The file is parsed with onnx-protobuf (protobuf 3.4, whose default
//! recursion limit of 100 bounds message nesting). Tensor data is decoded
//! later, by [`super::tensor`], which resolves external data against the
//! model's folder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use onnx_protobuf::{Message, ModelProto};

use crate::error::{Error, Result};

/// A parsed ONNX model and the folder its external data is resolved against.
pub struct OnnxModel {
    pub proto: ModelProto,
    pub path: PathBuf,
    /// The model file's folder, canonicalized.
    pub dir: PathBuf,
}

impl OnnxModel {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<OnnxModel> {
        let bytes = crate::data::read_regular_file(path)?;
        let mut proto = ModelProto::parse_from_bytes(&bytes)
            .map_err(|e| Error::Protobuf { path: path.to_path_buf(), message: e.to_string() })?;
        if proto.graph.is_none() {
            return Err(Error::Protobuf { path: path.to_path_buf(), message: "the model has no graph".into() });
        }
        name_nodes(&mut proto);
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = parent.canonicalize().map_err(|error| Error::Io { path: parent.clone(), error })?;
        Ok(OnnxModel { proto, path: path.to_path_buf(), dir })
    }

    /// Parses a model from memory; external data is resolved against `dir`.
    pub fn from_bytes(bytes: &[u8], dir: &Path) -> Result<OnnxModel> {
        let mut proto = ModelProto::parse_from_bytes(bytes)
            .map_err(|e| Error::Protobuf { path: PathBuf::from("<memory>"), message: e.to_string() })?;
        if proto.graph.is_none() {
            return Err(Error::Protobuf { path: PathBuf::from("<memory>"), message: "the model has no graph".into() });
        }
        name_nodes(&mut proto);
        Ok(OnnxModel { proto, path: PathBuf::from("<memory>"), dir: dir.to_path_buf() })
    }

    /// The opset version of the default (`ai.onnx`) domain.
    pub fn default_opset(&self) -> Result<i64> {
        self.opset_of("").ok_or_else(|| {
            // Writers that order fields by number (PyTorch's C++ protobuf)
            // put opset_import after the graph, so a file cut right after
            // its graph parses with no imports at all.
            let hint = if self.proto.opset_import.is_empty() {
                "; the model imports no operator set at all, which is what a file cut short after its graph looks like: \
                 export or download it again"
            } else {
                ""
            };
            Error::Model(format!(
                "{} imports no version of the default ONNX operator set (opset_import has no entry for domain '' or 'ai.onnx'){hint}",
                self.path.display()
            ))
        })
    }

    /// The opset version imported for `domain`, if any.
    pub fn opset_of(&self, domain: &str) -> Option<i64> {
        let wanted = normalize_domain(domain);
        self.proto.opset_import.iter().find(|o| normalize_domain(&o.domain) == wanted).map(|o| o.version)
    }
}

/// Gives every node of the main graph a unique name. ONNX allows empty and
/// repeated node names, but compression and quantization find layers by
/// name. An empty name becomes the node's first output's name (unique in
/// a valid graph), and a repeated one gets a `#2`, `#3`, ... suffix.
fn name_nodes(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    let mut seen: HashSet<String> = HashSet::with_capacity(graph.node.len());
    for (index, node) in graph.node.iter_mut().enumerate() {
        if node.name.is_empty() {
            node.name = match node.output.first() {
                Some(output) if !output.is_empty() => output.clone(),
                _ => format!("{}_{index}", node.op_type),
            };
        }
        if !seen.contains(&node.name) {
            seen.insert(node.name.clone());
            continue;
        }
        let mut suffix = 2;
        while seen.contains(&format!("{}#{suffix}", node.name)) {
            suffix += 1;
        }
        node.name = format!("{}#{suffix}", node.name);
        seen.insert(node.name.clone());
    }
}

/// `ai.onnx` and the empty string name the same domain.
pub fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" { "" } else { domain }
}
