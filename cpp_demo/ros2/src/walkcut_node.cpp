// walkcut_ros::WalkcutNode, a composable node (rclcpp_components): segments the images on `image`
// and publishes `labels` (mono16, segment id per pixel) and `overlay` (rgb8), each with the input's
// header so downstream nodes can match them.
//
// Threading: the subscription callback only hands the newest message to a worker thread (replacing
// one that was not started yet, counted as dropped); conversion, segmentation and publishing run on the
// worker. A segmentation slower than the camera therefore never blocks the executor (other components
// in the same container keep running) and never queues stale frames.
//
// Parameters (read once at start-up):
//   model          ONNX model or TensorRT engine (empty: the weight-free pixels source)
//   backend        auto | ort | trt | opencv-dnn
//   grid           pixels source grid R
//   contour_scale  pixels source intervening-contour scale; <= 0 turns the term off
//   mode, threshold, upsample     empty: the model's cut_defaults, else the package default
//   power, max_segments, min_size 0: likewise
#if __has_include(<cv_bridge/cv_bridge.hpp>)  // Humble and later; the .h header is deprecated since Iron
#include <cv_bridge/cv_bridge.hpp>
#else
#include <cv_bridge/cv_bridge.h>
#endif

#include <rclcpp/rclcpp.hpp>
#include <rclcpp_components/register_node_macro.hpp>
#include <sensor_msgs/image_encodings.hpp>
#include <sensor_msgs/msg/image.hpp>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "walkcut/pipeline.hpp"

namespace walkcut_ros {

class WalkcutNode : public rclcpp::Node {
 public:
  explicit WalkcutNode(const rclcpp::NodeOptions& options) : Node("walkcut", options) {
    // A bad model or option stops the node here with the library's message (the container reports
    // the exception), before any topic is created.
    pipeline_ = std::make_unique<walkcut::Pipeline>(read_options());
    RCLCPP_INFO(get_logger(), "walkcut source: %s; cuts: %s", pipeline_->source_name().c_str(),
                pipeline_->describe_cuts().c_str());
    // Depth 1 on both sides: only the newest frame matters, a slow subscriber gets the latest labels.
    const auto out_qos = rclcpp::QoS(rclcpp::KeepLast(1));
    labels_pub_ = create_publisher<sensor_msgs::msg::Image>("labels", out_qos);
    overlay_pub_ = create_publisher<sensor_msgs::msg::Image>("overlay", out_qos);
    sub_ = create_subscription<sensor_msgs::msg::Image>(
        "image", rclcpp::SensorDataQoS().keep_last(1),
        [this](sensor_msgs::msg::Image::ConstSharedPtr msg) { hand_over(std::move(msg)); });
    // Last: if anything above throws, no thread is left running (no callback runs before the node
    // is added to an executor, so frames cannot arrive before the worker exists).
    worker_ = std::thread([this] { work(); });
  }

  ~WalkcutNode() override {
    sub_.reset();  // no new frames
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    if (worker_.joinable()) worker_.join();  // finishes the frame in progress, if any
  }

  WalkcutNode(const WalkcutNode&) = delete;
  WalkcutNode& operator=(const WalkcutNode&) = delete;

 private:
  walkcut::PipelineOptions read_options() {
    walkcut::PipelineOptions opt;
    opt.model = declare_parameter<std::string>("model", "");
    opt.backend = declare_parameter<std::string>("backend", "auto");
    opt.grid = static_cast<int>(declare_parameter<int64_t>("grid", walkcut::defaults::kGrid));
    const double contour = declare_parameter<double>("contour_scale", walkcut::defaults::kContourScale);
    opt.contour_scale = contour > 0 ? std::optional<double>(contour) : std::nullopt;
    // Cut settings: only those the user set are "given" and override the model's cut_defaults.
    const std::string mode = declare_parameter<std::string>("mode", "");
    const std::string threshold = declare_parameter<std::string>("threshold", "");
    const std::string upsample = declare_parameter<std::string>("upsample", "");
    const int64_t power = declare_parameter<int64_t>("power", 0);
    const int64_t max_segments = declare_parameter<int64_t>("max_segments", 0);
    const int64_t min_size = declare_parameter<int64_t>("min_size", 0);
    if (!mode.empty()) opt.given.mode = mode;
    if (!threshold.empty()) opt.given.threshold = walkcut::Threshold::parse(threshold);
    if (!upsample.empty()) opt.given.upsample = upsample;
    if (power != 0) opt.given.power = static_cast<int>(power);
    if (max_segments != 0) opt.given.max_segments = static_cast<int>(max_segments);
    if (min_size != 0) opt.given.min_size = static_cast<int>(min_size);
    return opt;
  }

  // Subscription callback: keep only the newest frame; the worker does everything else.
  void hand_over(sensor_msgs::msg::Image::ConstSharedPtr msg) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (pending_) ++dropped_;
      pending_ = std::move(msg);
    }
    wake_.notify_one();
  }

  void work() {
    for (;;) {
      sensor_msgs::msg::Image::ConstSharedPtr msg;
      std::uint64_t dropped = 0;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stop_ || pending_; });
        if (stop_) return;
        msg = std::move(pending_);
        pending_.reset();
        dropped = dropped_;
      }
      if (dropped)
        RCLCPP_DEBUG_THROTTLE(get_logger(), *get_clock(), 5000, "%llu frames dropped so far (segmentation slower "
                              "than the input)", static_cast<unsigned long long>(dropped));
      process(msg);
    }
  }

  void process(const sensor_msgs::msg::Image::ConstSharedPtr& msg) {
    cv_bridge::CvImageConstPtr rgb;
    try {
      // Shares the message's buffer when it is rgb8 already; converts bgr8/mono8/... otherwise.
      rgb = cv_bridge::toCvShare(msg, sensor_msgs::image_encodings::RGB8);
    } catch (const cv_bridge::Exception& e) {
      RCLCPP_WARN_THROTTLE(get_logger(), *get_clock(), 5000, "cannot convert image: %s", e.what());
      return;
    }
    walkcut::Segmentation seg;
    try {
      seg = pipeline_->segment(rgb->image);
    } catch (const std::exception& e) {  // one bad frame must not stop the node
      RCLCPP_WARN_THROTTLE(get_logger(), *get_clock(), 5000, "segmentation failed: %s", e.what());
      return;
    }
    if (seg.n_segments > 65536) {
      RCLCPP_WARN_THROTTLE(get_logger(), *get_clock(), 5000, "%d segments do not fit a mono16 label image",
                           seg.n_segments);
      return;
    }
    cv::Mat labels16;
    seg.labels.convertTo(labels16, CV_16U);
    labels_pub_->publish(*cv_bridge::CvImage(msg->header, sensor_msgs::image_encodings::MONO16, labels16).toImageMsg());
    if (overlay_pub_->get_subscription_count() > 0)  // drawing costs time; only when someone listens
      overlay_pub_->publish(
          *cv_bridge::CvImage(msg->header, sensor_msgs::image_encodings::RGB8, walkcut::overlay(rgb->image, seg.labels))
               .toImageMsg());
    RCLCPP_DEBUG(get_logger(), "%d segments: source %.1f ms, cuts %.1f ms, upsample %.1f ms", seg.n_segments,
                 seg.timings.source_ms, seg.timings.cuts_ms, seg.timings.upsample_ms);
  }

  std::unique_ptr<walkcut::Pipeline> pipeline_;  // used by the worker thread only, after construction
  rclcpp::Publisher<sensor_msgs::msg::Image>::SharedPtr labels_pub_, overlay_pub_;
  rclcpp::Subscription<sensor_msgs::msg::Image>::SharedPtr sub_;

  std::mutex mutex_;  // guards pending_, dropped_, stop_
  std::condition_variable wake_;
  sensor_msgs::msg::Image::ConstSharedPtr pending_;  // newest frame not yet taken by the worker
  std::uint64_t dropped_ = 0;
  bool stop_ = false;
  std::thread worker_;  // started last in the constructor, joined first in the destructor
};

}  // namespace walkcut_ros

RCLCPP_COMPONENTS_REGISTER_NODE(walkcut_ros::WalkcutNode)
