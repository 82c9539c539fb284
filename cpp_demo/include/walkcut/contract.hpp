// The model contract (runtime/sources/contract.py): read from ONNX metadata or the TensorRT engine's JSON
// file, and checked before anything runs, so a model this code cannot honour is refused up front.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace walkcut {

struct Contract {
  int image_size = 0;  // S
  int attn_res = 0;    // R
  std::string layers, model_id, model_hash, normalization = "minus_one_to_one", color_order = "RGB",
      precision = "fp32", exporter_version;
  std::vector<int> resolutions;
  std::vector<double> weights;
  int timestep = 300, opset = 20, contract_version = 0;
  bool noise = false;
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
