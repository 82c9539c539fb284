// The model contract (runtime/sources/contract.py): read from ONNX metadata or the TensorRT engine's
// JSON file, and checked before anything runs, so a model this code cannot honour is refused up front.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "walkcut/cuts.hpp"

namespace walkcut {

// Cut settings that may each be set or not: a model's own defaults (contract `cut_defaults`, keys
// defaults::kCutDefaultKeys) or the ones a caller chose explicitly. apply() overwrites only what is set.
struct CutSettings {
  std::optional<std::string> mode;
  std::optional<int> power;
  std::optional<Threshold> threshold;
  std::optional<int> min_size;  // set to -1: the package default, max(1, n / 256)
  std::optional<int> max_segments;
  std::optional<std::string> upsample;  // joint-bilateral | nearest | snap
  bool empty() const { return !mode && !power && !threshold && !min_size && !max_segments && !upsample; }
  void apply(CutOptions& cuts, std::string& upsample_method) const;
};

struct Contract {
  int image_size = 0;  // S
  int attn_res = 0;    // R
  std::string backbone = "unet";  // unet (S a multiple of 64) | vit (S = R x patch size)
  std::string layers, model_id, model_hash, normalization = "minus_one_to_one", color_order = "RGB",
      precision = "fp32", exporter_version;
  std::vector<int> resolutions;
  std::vector<double> weights;
  int timestep = 300, opset = 20, contract_version = 0;
  bool noise = false;
  CutSettings cut_defaults;  // version 2: the cut settings tuned for this model (empty: package defaults)
  std::string source;  // file it came from, for messages

  int n_nodes() const { return attn_res * attn_res; }
  // Parses and checks the JSON text; throws std::runtime_error naming `source` and the fix.
  static Contract from_json(const std::string& text, const std::string& source);
};

// ONNX ModelProto.metadata_props read straight from the protobuf wire format, so the contract can
// be checked without any inference SDK. Throws if the file is missing or not an ONNX model.
std::map<std::string, std::string> read_onnx_metadata(const std::string& path);

// Contract of a model file: `.onnx` (metadata) or a TensorRT engine (`<engine>.json` beside it).
Contract read_contract(const std::string& model_path);

}  // namespace walkcut
