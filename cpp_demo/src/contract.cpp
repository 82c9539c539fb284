// Contract reading: a minimal JSON reader (the contract is flat JSON) and a protobuf walk over
// the ONNX file's top-level fields, skipping the graph without loading it.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "walkcut/contract.hpp"
#include "walkcut/defaults.hpp"

namespace walkcut {
namespace {

// ---- JSON ----------------------------------------------------------------------------------------
struct Json {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject } type = Type::kNull;
  bool b = false;
  double num = 0.0;
  std::string str;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> fields;
  const Json* find(const std::string& key) const {
    for (const auto& kv : fields)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}
  Json parse() {
    Json v = value(0);
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(what + " at character " + std::to_string(i_));
  }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  bool word(const char* w) {
    const size_t n = std::char_traits<char>::length(w);
    if (s_.compare(i_, n, w) == 0) return i_ += n, true;
    return false;
  }
  std::string string() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c == '\\') {
        if (i_ >= s_.size()) fail("unterminated escape");
        c = s_[i_++];
        switch (c) {
          case 'n': out += '\n'; break;
          case 't': out += '\t'; break;
          case 'r': out += '\r'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'u': {  // contract strings are ASCII in practice; keep other code points as '?'
            if (i_ + 4 > s_.size()) fail("bad \\u escape");
            const long cp = std::stol(s_.substr(i_, 4), nullptr, 16);
            out += cp < 128 ? static_cast<char>(cp) : '?';
            i_ += 4;
            break;
          }
          default: out += c;
        }
      } else {
        out += c;
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }
  Json value(int depth) {
    if (depth > 32) fail("nesting too deep");
    ws();
    Json v;
    if (i_ >= s_.size()) fail("unexpected end");
    const char c = s_[i_];
    if (c == '{') {
      ++i_;
      v.type = Json::Type::kObject;
      if (eat('}')) return v;
      do {
        ws();
        std::string key = string();
        expect(':');
        v.fields.emplace_back(std::move(key), value(depth + 1));
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++i_;
      v.type = Json::Type::kArray;
      if (eat(']')) return v;
      do v.items.push_back(value(depth + 1));
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.type = Json::Type::kString;
      v.str = string();
    } else if (word("true") || word("false")) {
      v.type = Json::Type::kBool;
      v.b = s_[i_ - 1] == 'e' && s_[i_ - 2] == 'u';
    } else if (word("null")) {
      v.type = Json::Type::kNull;
    } else {
      size_t used = 0;
      try {
        v.num = std::stod(s_.substr(i_, 64), &used);
      } catch (const std::exception&) {
        fail("unexpected character");
      }
      v.type = Json::Type::kNumber;
      i_ += used;
    }
    return v;
  }
};

// ---- protobuf wire format -------------------------------------------------------------------------
class Wire {
 public:
  Wire(std::istream& in, std::uint64_t end) : in_(in), end_(end) {}
  bool done() { return static_cast<std::uint64_t>(in_.tellg()) >= end_; }
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const int c = in_.get();
      if (c == EOF) throw std::runtime_error("truncated varint");
      v |= static_cast<std::uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    throw std::runtime_error("malformed varint");
  }
  std::uint64_t length() {
    const std::uint64_t n = varint();
    if (static_cast<std::uint64_t>(in_.tellg()) + n > end_) throw std::runtime_error("field runs past its end");
    return n;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: in_.seekg(8, std::ios::cur); break;
      case 2: in_.seekg(static_cast<std::streamoff>(length()), std::ios::cur); break;
      case 5: in_.seekg(4, std::ios::cur); break;
      default: throw std::runtime_error("unknown wire type " + std::to_string(wire_type));
    }
    if (!in_ || static_cast<std::uint64_t>(in_.tellg()) > end_) throw std::runtime_error("field runs past its end");
  }
  std::string bytes() {
    std::string s(length(), '\0');
    in_.read(s.data(), static_cast<std::streamsize>(s.size()));
    return s;
  }

 private:
  std::istream& in_;
  std::uint64_t end_;
};

int as_int(const Json& v, const char* key, const std::string& src) {
  if (v.type != Json::Type::kNumber || v.num != std::floor(v.num) || std::fabs(v.num) > 2147483647.0)
    throw std::runtime_error(src + ": contract field '" + key + "' must be an integer; re-export the model");
  return static_cast<int>(v.num);
}

std::string as_str(const Json& v, const char* key, const std::string& src) {
  if (v.type != Json::Type::kString)
    throw std::runtime_error(src + ": contract field '" + key + "' must be a string; re-export the model");
  return v.str;
}

Json parse_json(const std::string& text, const std::string& src) {
  try {
    return JsonParser(text).parse();
  } catch (const std::exception& e) {
    throw std::runtime_error(src + ": the walkcut contract is not valid JSON (" + e.what() + ")");
  }
}

template <size_t N>
bool one_of(const std::string& value, const char* const (&names)[N]) {
  for (const char* name : names)
    if (value == name) return true;
  return false;
}

template <size_t N>
std::string joined(const char* const (&names)[N]) {
  std::string out;
  for (const char* name : names) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

// `cut_defaults`: only the known keys, each of the type its option takes; the values are then checked
// as CutOptions::validate() checks a flag, so a model with unusable defaults is refused at load time.
CutSettings parse_cut_defaults(const Json& v, const std::string& src) {
  if (v.type != Json::Type::kObject)
    throw std::runtime_error(src + ": contract field 'cut_defaults' must be a JSON object; re-export the model");
  CutSettings out;
  for (const auto& [key, value] : v.fields) {
    const std::string where = "cut_defaults." + key;
    if (!one_of(key, defaults::kCutDefaultKeys))
      throw std::runtime_error(src + ": contract cut_defaults has unknown key '" + key + "' (known: " +
                               joined(defaults::kCutDefaultKeys) + "); re-export the model");
    if (key == "mode") {
      out.mode = as_str(value, where.c_str(), src);
    } else if (key == "power") {
      out.power = as_int(value, where.c_str(), src);
    } else if (key == "max_segments") {
      out.max_segments = as_int(value, where.c_str(), src);
    } else if (key == "min_size") {
      out.min_size = value.type == Json::Type::kNull ? -1 : as_int(value, where.c_str(), src);
    } else if (key == "threshold") {
      try {
        if (value.type == Json::Type::kString) {
          out.threshold = Threshold::parse(value.str);
        } else if (value.type == Json::Type::kNumber) {
          if (!std::isfinite(value.num) || value.num < 0) throw std::invalid_argument("threshold must be a number >= 0");
          Threshold t;
          t.kind = Threshold::Kind::kValue;
          t.value = value.num;
          out.threshold = t;
        } else {
          throw std::invalid_argument("threshold must be a number >= 0, auto-ncut, auto-mincut or auto-ncut-unweighted");
        }
      } catch (const std::invalid_argument& e) {
        throw std::runtime_error(src + ": contract cut_defaults: " + e.what() + "; re-export the model");
      }
    } else if (key == "upsample") {
      out.upsample = as_str(value, where.c_str(), src);
      if (!one_of(*out.upsample, defaults::kUpsampleMethods))
        throw std::runtime_error(src + ": contract cut_defaults: upsample must be one of " +
                                 joined(defaults::kUpsampleMethods) + ", got '" + *out.upsample +
                                 "'; re-export the model");
    }
  }
  CutOptions check;
  std::string upsample;
  out.apply(check, upsample);
  try {
    check.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(src + ": contract cut_defaults: " + e.what() + "; re-export the model");
  }
  return out;
}

Contract contract_from_object(const Json& root, const std::string& src) {
  if (root.type != Json::Type::kObject) throw std::runtime_error(src + ": the walkcut contract must be a JSON object");
  Contract c;
  c.source = src;
  const Json* version = root.find("contract_version");
  if (!version || version->type != Json::Type::kNumber || (version->num != 1 && version->num != defaults::kContractVersion))
    throw std::runtime_error(src + ": contract version is not supported by this runtime (reads 1 and " +
                             std::to_string(defaults::kContractVersion) +
                             "); re-export the model with this walkcut version (`walkcut export ...`)");
  static const std::set<std::string> known = {
      "image_size", "attn_res", "layers", "resolutions", "weights", "timestep", "noise", "model_id",
      "model_hash", "normalization", "color_order", "precision", "opset", "exporter_version",
      "contract_version", "extra", "backbone", "cut_defaults"};
  const bool v1 = version->num == 1;  // version 2 added backbone and cut_defaults
  for (const auto& kv : root.fields)
    if (!known.count(kv.first) || (v1 && (kv.first == "backbone" || kv.first == "cut_defaults")))
      throw std::runtime_error(src + ": unknown contract field '" + kv.first + "'; re-export the model");
  for (const char* key : {"image_size", "attn_res"})
    if (!root.find(key)) throw std::runtime_error(src + ": contract lacks '" + key + "'; re-export the model");
  c.contract_version = static_cast<int>(version->num);
  c.image_size = as_int(*root.find("image_size"), "image_size", src);
  c.attn_res = as_int(*root.find("attn_res"), "attn_res", src);
  if (const Json* v = root.find("timestep")) c.timestep = as_int(*v, "timestep", src);
  if (const Json* v = root.find("opset")) c.opset = as_int(*v, "opset", src);
  if (const Json* v = root.find("noise")) c.noise = v->type == Json::Type::kBool && v->b;
  struct { const char* key; std::string* dst; } strings[] = {
      {"layers", &c.layers}, {"model_id", &c.model_id}, {"model_hash", &c.model_hash},
      {"normalization", &c.normalization}, {"color_order", &c.color_order}, {"precision", &c.precision},
      {"exporter_version", &c.exporter_version}};
  for (auto& s : strings)
    if (const Json* v = root.find(s.key)) *s.dst = as_str(*v, s.key, src);
  if (const Json* v = root.find("resolutions"))
    for (const auto& item : v->items) c.resolutions.push_back(as_int(item, "resolutions", src));
  if (const Json* v = root.find("weights"))
    for (const auto& item : v->items) c.weights.push_back(item.num);
  if (const Json* v = root.find("backbone")) c.backbone = as_str(*v, "backbone", src);
  if (const Json* v = root.find("cut_defaults")) c.cut_defaults = parse_cut_defaults(*v, src);
  // The same checks as ModelContract.__post_init__ and check_runtime_support.
  if (!one_of(c.backbone, defaults::kBackbones))
    throw std::runtime_error(src + ": backbone must be one of " + joined(defaults::kBackbones) + ", got '" +
                             c.backbone + "'; re-export the model");
  if (c.attn_res < 2) throw std::runtime_error(src + ": attn_res must be an integer >= 2, got " + std::to_string(c.attn_res));
  if (c.backbone == "unet" && (c.image_size <= 0 || c.image_size % defaults::kUnetSizeMultiple))
    throw std::runtime_error(src + ": image_size must be a positive multiple of " +
                             std::to_string(defaults::kUnetSizeMultiple) + ", got " + std::to_string(c.image_size));
  if (c.backbone == "vit" && (c.image_size <= 0 || c.image_size % c.attn_res))
    throw std::runtime_error(src + ": image_size of a vision transformer must be a positive multiple of attn_res (" +
                             std::to_string(c.attn_res) + ": S = R x patch size), got " + std::to_string(c.image_size));
  if (c.attn_res > defaults::kMaxAttnRes)
    throw std::runtime_error(src + ": output grid R = " + std::to_string(c.attn_res) +
                             " is larger than this runtime handles (R <= " + std::to_string(defaults::kMaxAttnRes) +
                             "); re-export with `--attn-res 32` or 64");
  if (c.weights.size() != c.resolutions.size())
    throw std::runtime_error(src + ": weights and resolutions differ in length; re-export the model");
  if (!one_of(c.normalization, defaults::kNormalizations))
    throw std::runtime_error(src + ": normalization '" + c.normalization + "' is not supported (expects one of " +
                             joined(defaults::kNormalizations) + "); re-export with this walkcut version");
  if (c.color_order != "RGB" && c.color_order != "BGR")
    throw std::runtime_error(src + ": color_order '" + c.color_order + "' is not RGB or BGR; re-export");
  if (c.precision != "fp32" && c.precision != "fp16" && c.precision != "int8")
    throw std::runtime_error(src + ": precision '" + c.precision + "' is not fp32, fp16 or int8; re-export");
  return c;
}

}  // namespace

void CutSettings::apply(CutOptions& cuts, std::string& upsample_method) const {
  if (mode) cuts.mode = *mode;
  if (power) cuts.power = *power;
  if (threshold) cuts.threshold = *threshold;
  if (min_size) cuts.min_size = *min_size;
  if (max_segments) cuts.max_segments = *max_segments;
  if (upsample) upsample_method = *upsample;
}

Contract Contract::from_json(const std::string& text, const std::string& src) {
  return contract_from_object(parse_json(text, src), src);
}

std::map<std::string, std::string> read_onnx_metadata(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!std::filesystem::exists(path)) throw std::runtime_error(path + ": no such file");
  if (std::filesystem::is_directory(path)) throw std::runtime_error(path + ": is a directory, expected a model file");
  if (!in) throw std::runtime_error(path + ": cannot open");
  const auto size = std::filesystem::file_size(path);
  std::map<std::string, std::string> meta;
  bool has_graph = false;
  try {
    Wire top(in, size);
    while (!top.done()) {
      const std::uint64_t tag = top.varint();
      const int field = static_cast<int>(tag >> 3), type = static_cast<int>(tag & 7);
      if (field == 0) throw std::runtime_error("field number 0");
      if (field == 7 && type == 2) has_graph = true;
      if (field == 14 && type == 2) {  // repeated StringStringEntryProto metadata_props
        const std::uint64_t len = top.length();
        const std::uint64_t end = static_cast<std::uint64_t>(in.tellg()) + len;
        Wire entry(in, end);
        std::string key, value;
        while (!entry.done()) {
          const std::uint64_t t = entry.varint();
          if ((t >> 3) == 1 && (t & 7) == 2) key = entry.bytes();
          else if ((t >> 3) == 2 && (t & 7) == 2) value = entry.bytes();
          else entry.skip(static_cast<int>(t & 7));
        }
        meta[key] = value;
      } else {
        top.skip(type);
      }
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not an ONNX model (" + e.what() + ")");
  }
  if (!has_graph) throw std::runtime_error(path + ": not an ONNX model (no graph)");
  return meta;
}

Contract read_contract(const std::string& model_path) {
  namespace fs = std::filesystem;
  const fs::path p(model_path);
  if (!fs::exists(p)) throw std::runtime_error(model_path + ": no such file");
  const std::string ext = p.extension().string();
  if (ext == ".engine" || ext == ".plan") {
    const std::string sidecar = model_path + ".json";
    std::ifstream in(sidecar);
    if (!in) throw std::runtime_error(model_path + ": no contract file " + sidecar +
                                      " beside the engine; rebuild it with `walkcut export --trt`");
    std::stringstream text;
    text << in.rdbuf();
    // The sidecar wraps the contract: {"contract": {...}, "tensorrt_version": ..., ...}.
    const Json root = parse_json(text.str(), sidecar);
    const Json* contract = root.find("contract");
    if (!contract) throw std::runtime_error(sidecar + ": has no \"contract\" entry; rebuild the engine");
    return contract_from_object(*contract, sidecar);
  }
  const auto meta = read_onnx_metadata(model_path);
  const auto it = meta.find(defaults::kMetadataKey);
  if (it == meta.end())
    throw std::runtime_error(model_path + " is not a walkcut model: its metadata has no '" +
                             std::string(defaults::kMetadataKey) +
                             "' entry. Export one with `walkcut export --model <SD weights> --out models/NAME.onnx`.");
  return Contract::from_json(it->second, model_path);
}

}  // namespace walkcut
