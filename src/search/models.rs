//! Embedding models kept in the data dir: `<data_dir>/models/<name>/` holds a model folder
//! (`config.json`, `tokenizer.json`, `model.safetensors`, optional sentence-transformers
//! files), copied or linked there by `brain models add`. Which one is active lives in the
//! store's meta table (`search.model`), unless the config file names one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Embed;

/// Files a model folder must have.
pub const REQUIRED: &[&str] = &["config.json", "tokenizer.json", "model.safetensors"];

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model name {0:?}: use letters, digits, '.', '-' and '_'")]
    BadName(String),
    #[error("{path} is not a model folder: {file} is missing")]
    Missing { path: PathBuf, file: &'static str },
    #[error("a model named {0:?} already exists; remove it first or pick another name")]
    Exists(String),
    #[error("no model named {0:?}; `brain models list` shows what there is")]
    Unknown(String),
    #[error("model {name}: {message}")]
    Load { name: String, message: String },
    #[error("model folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    pub linked: bool,
    pub active: bool,
}

pub fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

fn check_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ModelError::BadName(name.to_owned()))
    }
}

/// Checks that `dir` looks like a model folder.
pub fn check_folder(dir: &Path) -> Result<(), ModelError> {
    for file in REQUIRED {
        if !dir.join(file).is_file() {
            return Err(ModelError::Missing {
                path: dir.to_owned(),
                file,
            });
        }
    }
    Ok(())
}

impl Embed for crate::embed::Embedder {
    fn model_id(&self) -> &str {
        crate::embed::Embedder::model_id(self)
    }

    fn dim(&self) -> usize {
        crate::embed::Embedder::dim(self)
    }

    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        crate::embed::Embedder::embed_passages(self, texts).map_err(|e| e.to_string())
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, String> {
        crate::embed::Embedder::embed_queries(self, &[text])
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or_else(|| "the model returned no vector".to_owned())
    }
}

/// Loads the model in `dir`.
pub fn load(dir: &Path) -> Result<Arc<dyn Embed>, ModelError> {
    check_folder(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::embed::Embedder::load(dir)
        .map(|e| Arc::new(e) as Arc<dyn Embed>)
        .map_err(|e| ModelError::Load {
            name,
            message: e.to_string(),
        })
}

/// Copies (or links) the model folder `src` into the data dir as `name`, after checking that
/// it loads. A half-copied folder never appears under its name: the copy is made beside it and
/// renamed into place.
pub fn add(data_dir: &Path, name: &str, src: &Path, link: bool) -> Result<PathBuf, ModelError> {
    check_name(name)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelError::Io { path, source }
    };
    let src = std::fs::canonicalize(src).map_err(io(src))?;
    load(&src)?;
    let dir = models_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let dest = dir.join(name);
    if dest.exists() || dest.is_symlink() {
        return Err(ModelError::Exists(name.to_owned()));
    }
    if link {
        std::os::unix::fs::symlink(&src, &dest).map_err(io(&dest))?;
        return Ok(dest);
    }
    let tmp = dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_tree(&src, &tmp, 0)?;
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    Ok(dest)
}

/// Copies regular files and folders (two levels: sentence-transformers keeps pooling settings
/// in `1_Pooling/`); symlinks are followed.
fn copy_tree(src: &Path, dest: &Path, depth: usize) -> Result<(), ModelError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let meta = std::fs::metadata(&from).map_err(io(&from))?;
        if meta.is_dir() {
            if depth < 2 {
                copy_tree(&from, &to, depth + 1)?;
            }
        } else if meta.is_file() {
            std::fs::copy(&from, &to).map_err(io(&from))?;
        }
    }
    Ok(())
}

/// Every model in the data dir; `active` marks the one named.
pub fn list(data_dir: &Path, active: Option<&str>) -> Result<Vec<ModelInfo>, ModelError> {
    let dir = models_dir(data_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(ModelError::Io { path: dir, source }),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        out.push(ModelInfo {
            linked: path.is_symlink(),
            active: active == Some(name.as_str()),
            path,
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Deletes model `name` from the data dir: a copied folder with its files, a linked one by its
/// link only (the folder it points to is the user's). Renamed aside first, so a half-deleted
/// model never stays under its name.
pub fn remove(data_dir: &Path, name: &str) -> Result<(), ModelError> {
    let p = folder(data_dir, name)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ModelError::Io { path, source }
    };
    if p.is_symlink() {
        return std::fs::remove_file(&p).map_err(io(&p));
    }
    let aside = models_dir(data_dir).join(format!(".{name}.removing"));
    let _ = std::fs::remove_dir_all(&aside);
    std::fs::rename(&p, &aside).map_err(io(&p))?;
    std::fs::remove_dir_all(&aside).map_err(io(&aside))
}

/// The folder of model `name`, which must exist.
pub fn folder(data_dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    check_name(name)?;
    let p = models_dir(data_dir).join(name);
    if !p.exists() && !p.is_symlink() {
        return Err(ModelError::Unknown(name.to_owned()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("all-MiniLM-L6-v2").is_ok());
        assert!(check_name("bge_small.en").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_folder_without_weights_is_refused_with_the_missing_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), "{}").unwrap();
        std::fs::write(d.path().join("tokenizer.json"), "{}").unwrap();
        let e = add(d.path(), "m", d.path(), false).unwrap_err().to_string();
        assert!(e.contains("model.safetensors is missing"), "{e}");
    }
}
