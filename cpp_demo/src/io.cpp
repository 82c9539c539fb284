// Reading and writing files for the demo; every error names the file and the problem.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>

#include "walkcut/io.hpp"

namespace walkcut {
namespace fs = std::filesystem;

namespace {
void require_file(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error(path + ": no such file");
  if (fs::is_directory(path)) throw std::runtime_error(path + ": is a directory, expected a file");
  if (fs::file_size(path) == 0) throw std::runtime_error(path + ": file is empty (0 bytes)");
}

struct NpyArray {
  std::vector<long> shape;
  std::vector<double> data;
};

NpyArray read_npy(const std::string& path) {
  require_file(path);
  std::ifstream in(path, std::ios::binary);
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw std::runtime_error(path + ": not a .npy file (bad magic)");
  size_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<size_t>(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_len))) throw std::runtime_error(path + ": truncated .npy header");
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([<>|=]?[fi][48])'")))
    throw std::runtime_error(path + ": unsupported .npy dtype (expected float32/float64): " + header);
  const std::string descr = m[1];
  if (descr[0] == '>') throw std::runtime_error(path + ": big-endian .npy is not supported");
  if (header.find("'fortran_order': True") != std::string::npos)
    throw std::runtime_error(path + ": Fortran-ordered .npy is not supported (save a C-contiguous array)");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)")))
    throw std::runtime_error(path + ": .npy header has no shape");
  NpyArray a;
  const std::string dims = m[1];
  static const std::regex digits("\\d+");
  std::sregex_iterator it(dims.begin(), dims.end(), digits), end;
  size_t count = 1;
  for (; it != end; ++it) a.shape.push_back(std::stol(it->str())), count *= a.shape.back();
  const char kind = descr[descr.size() - 2];
  const int width = descr.back() - '0';
  std::vector<char> raw(count * width);
  if (!in.read(raw.data(), static_cast<std::streamsize>(raw.size())))
    throw std::runtime_error(path + ": .npy data is truncated");
  a.data.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const char* p = raw.data() + i * width;
    if (kind == 'f' && width == 4) { float v; std::memcpy(&v, p, 4); a.data[i] = v; }
    else if (kind == 'f') { double v; std::memcpy(&v, p, 8); a.data[i] = v; }
    else if (width == 4) { std::int32_t v; std::memcpy(&v, p, 4); a.data[i] = v; }
    else { std::int64_t v; std::memcpy(&v, p, 8); a.data[i] = static_cast<double>(v); }
  }
  return a;
}
}  // namespace

cv::Mat to_rgb8(const cv::Mat& decoded, const std::string& source) {
  cv::Mat img = decoded, out;
  if (img.depth() == CV_16U) {  // keep the high byte (truncate), as the Python reader's `>> 8`
    cv::Mat high(img.size(), CV_8UC(img.channels()));
    cv::Mat src = img.isContinuous() ? img : img.clone();
    const auto* in = src.ptr<std::uint16_t>();
    auto* out = high.ptr<std::uint8_t>();
    for (size_t i = 0; i < src.total() * src.channels(); ++i) out[i] = static_cast<std::uint8_t>(in[i] >> 8);
    img = high;
  }
  else if (img.depth() == CV_32F || img.depth() == CV_64F) img.convertTo(img, CV_8U, 255.0);
  else if (img.depth() != CV_8U) throw std::runtime_error(source + ": unsupported pixel type");
  switch (img.channels()) {
    case 1: cv::cvtColor(img, out, cv::COLOR_GRAY2RGB); break;
    case 3: cv::cvtColor(img, out, cv::COLOR_BGR2RGB); break;
    case 4: cv::cvtColor(img, out, cv::COLOR_BGRA2RGB); break;
    default: throw std::runtime_error(source + ": unsupported image layout (" + std::to_string(img.channels()) + " channels)");
  }
  return out;
}

cv::Mat read_image_rgb(const std::string& path) {
  require_file(path);
  std::ifstream in(path, std::ios::binary);
  const std::vector<uchar> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const cv::Mat img = cv::imdecode(bytes, cv::IMREAD_UNCHANGED);
  if (img.empty())
    throw std::runtime_error(path + ": not a readable image (corrupt, truncated, or not an image format OpenCV decodes)");
  return to_rgb8(img, path);
}

Dense read_npy_matrix(const std::string& path) {
  NpyArray a = read_npy(path);
  if (a.shape.size() == 3 && a.shape[0] == 1) a.shape.erase(a.shape.begin());
  if (a.shape.size() != 2 || a.shape[0] != a.shape[1])
    throw std::runtime_error(path + ": expected a square (n, n) or (1, n, n) matrix");
  // .npy is row-major; Eigen's default is column-major.
  return Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(
      a.data.data(), a.shape[0], a.shape[1]);
}

Vector read_npy_vector(const std::string& path) {
  NpyArray a = read_npy(path);
  if (a.shape.size() != 1) throw std::runtime_error(path + ": expected a vector (n,)");
  return Eigen::Map<const Vector>(a.data.data(), a.shape[0]);
}

namespace {
// A version-1 .npy file: descr ('<i4', '<f4'), C order, `shape`, then `bytes` bytes of data.
void write_npy(const std::string& path, const char* descr, const std::vector<long>& shape, const void* data,
               size_t bytes) {
  std::string dims;
  for (const long d : shape) dims += std::to_string(d) + ",";
  if (shape.size() > 1) dims.pop_back();  // (n,) keeps its comma, (a, b) does not need one
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  header += std::string(63 - (10 + header.size()) % 64, ' ') + "\n";  // pad so data starts on 64 bytes
  std::ofstream out(path, std::ios::binary);
  const unsigned short len = static_cast<unsigned short>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(len & 0xff)).put(static_cast<char>(len >> 8));
  out << header;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!out) throw std::runtime_error(path + ": cannot write");
}
}  // namespace

void write_npy_labels(const std::string& path, const std::vector<int>& labels) {
  write_npy(path, "<i4", {static_cast<long>(labels.size())}, labels.data(), labels.size() * 4);
}

void write_npy_array(const std::string& path, const cv::Mat& array) {
  if ((array.depth() != CV_32F && array.depth() != CV_64F) || array.channels() != 1 || !array.isContinuous())
    throw std::invalid_argument(path + ": write_npy_array expects a continuous single-channel float32/float64 array");
  std::vector<long> shape(array.size.p, array.size.p + array.dims);
  write_npy(path, array.depth() == CV_32F ? "<f4" : "<f8", shape, array.ptr(), array.total() * array.elemSize());
}

namespace {
// Encode first, then write through a temporary name and rename: no partial files.
void write_png(const std::string& path, const cv::Mat& img) {
  std::vector<uchar> buf;
  if (!cv::imencode(".png", img, buf)) throw std::runtime_error(path + ": PNG encoding failed");
  const std::string tmp = path + ".part";
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
    if (!out) throw std::runtime_error(path + ": cannot write");
  }
  fs::rename(tmp, path);
}
}  // namespace

void write_label_png(const std::string& path, const cv::Mat& labels) {
  double lo = 0, hi = 0;
  cv::minMaxLoc(labels, &lo, &hi);
  if (lo < 0 || hi > 65535) throw std::runtime_error(path + ": labels must lie in 0..65535 for a uint16 PNG");
  cv::Mat u16;
  labels.convertTo(u16, CV_16U);
  write_png(path, u16);
}

void write_rgb_png(const std::string& path, const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  write_png(path, bgr);
}

}  // namespace walkcut
