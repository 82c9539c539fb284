// walkcut_node: segments every image on `image` and publishes `labels` (mono16, segment id per
// pixel) and `overlay` (rgb8), each with the input's header so downstream nodes can match them.
//
// Parameters: model (ONNX/TensorRT path; empty = pixels source), backend (auto|ort|trt|opencv-dnn),
// grid (pixels source R), threshold (auto-ncut|auto-mincut|number), max_segments.
#include <cv_bridge/cv_bridge.h>

#include <rclcpp/rclcpp.hpp>
#include <sensor_msgs/image_encodings.hpp>
#include <sensor_msgs/msg/image.hpp>

#include <memory>

#include "walkcut/pipeline.hpp"

class WalkcutNode : public rclcpp::Node {
 public:
  WalkcutNode() : Node("walkcut") {
    walkcut::PipelineOptions opt;
    opt.model = declare_parameter<std::string>("model", "");
    opt.backend = declare_parameter<std::string>("backend", "auto");
    opt.grid = static_cast<int>(declare_parameter<int64_t>("grid", walkcut::defaults::kGrid));
    opt.cuts.threshold = walkcut::Threshold::parse(declare_parameter<std::string>("threshold", "auto-ncut"));
    opt.cuts.max_segments =
        static_cast<int>(declare_parameter<int64_t>("max_segments", walkcut::defaults::kMaxSegments));
    // A bad model or option should stop the node at start-up with the library's message.
    pipeline_ = std::make_unique<walkcut::Pipeline>(opt);
    RCLCPP_INFO(get_logger(), "walkcut source: %s", pipeline_->source_name().c_str());
    // Depth 1: segmentation is slower than a camera; keep only the newest frame.
    const auto qos = rclcpp::SensorDataQoS().keep_last(1);
    labels_pub_ = create_publisher<sensor_msgs::msg::Image>("labels", 10);
    overlay_pub_ = create_publisher<sensor_msgs::msg::Image>("overlay", 10);
    sub_ = create_subscription<sensor_msgs::msg::Image>(
        "image", qos, [this](sensor_msgs::msg::Image::ConstSharedPtr msg) { on_image(msg); });
  }

 private:
  void on_image(const sensor_msgs::msg::Image::ConstSharedPtr& msg) {
    cv_bridge::CvImageConstPtr rgb;
    try {
      rgb = cv_bridge::toCvShare(msg, sensor_msgs::image_encodings::RGB8);  // converts bgr8/mono8/...
    } catch (const cv_bridge::Exception& e) {
      RCLCPP_WARN_THROTTLE(get_logger(), *get_clock(), 5000, "cannot convert image: %s", e.what());
      return;
    }
    walkcut::Segmentation seg;
    try {
      seg = pipeline_->segment(rgb->image);
    } catch (const std::exception& e) {  // one bad frame must not kill the node
      RCLCPP_WARN_THROTTLE(get_logger(), *get_clock(), 5000, "segmentation failed: %s", e.what());
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

  std::unique_ptr<walkcut::Pipeline> pipeline_;
  rclcpp::Subscription<sensor_msgs::msg::Image>::SharedPtr sub_;
  rclcpp::Publisher<sensor_msgs::msg::Image>::SharedPtr labels_pub_, overlay_pub_;
};

int main(int argc, char** argv) {
  rclcpp::init(argc, argv);
  try {
    rclcpp::spin(std::make_shared<WalkcutNode>());
  } catch (const std::exception& e) {
    RCLCPP_FATAL(rclcpp::get_logger("walkcut"), "%s", e.what());
    rclcpp::shutdown();
    return 1;
  }
  rclcpp::shutdown();
  return 0;
}
