//! Small loaders for the data lutq's CLI and tests use: NPY tensors (via `npyz`), IDX files
//! (MNIST / Fashion-MNIST, plain or gzipped) and the committed photo-crop recipes.
//!
//! Every reader takes bytes (or a reader); the `*_file` functions are thin conveniences that
//! read a path first. Malformed input is reported as a [`DataIoError`], never by panicking.

mod error;
pub mod idx;
pub mod npy;
pub mod photos;

pub use error::{DataIoError, Result};
pub use idx::{
    IdxArray, IdxImages, read_idx, read_idx_images, read_idx_images_file, read_idx_labels,
    read_idx_labels_file,
};
pub use npy::{
    NpyArray, NpyU8, read_labels, read_labels_file, read_labels_from_reader, write_labels_npy,
    write_labels_npy_file,
};
pub use photos::{
    CENTRE_SCALE, CROP_SIZE, CropSpec, IMAGENET_MEAN, IMAGENET_STD, PhotoSource, Split,
    centre_crops_dir, materialise_crops, materialise_split_dir, parse_crops_csv, parse_names,
    source_file_name,
};
