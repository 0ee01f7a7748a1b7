#pragma once
// Where requests come from: closed loop, Poisson arrivals, or a trace. Sources assign ids 0, 1, 2, ... in
// arrival order and are deterministic for a given seed (and, for closed loop, a given finish order).
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "duplex/base/units.hpp"
#include "duplex/runtime/scheduler/request.hpp"
#include "duplex/runtime/workload/length_distribution.hpp"
#include "duplex/runtime/workload/random.hpp"

namespace duplex::runtime {

class RequestSource {
 public:
  virtual ~RequestSource() = default;
  // Requests with arrival <= now not returned before, in arrival order.
  virtual std::vector<RequestSpec> take_arrived(Time now) = 0;
  // The next arrival not yet returned, when one is known now.
  virtual std::optional<Time> next_arrival() const = 0;
  // Tells the source a request finished at `when` (closed loop issues a replacement arriving then).
  virtual void on_finished(RequestId id, Time when) = 0;
  // True once every request this source will ever produce has been returned.
  virtual bool exhausted() const = 0;
  virtual std::int64_t total_requests() const = 0;
};

// Removes and returns the requests of `pending` (in arrival order) that arrived by `now`.
std::vector<RequestSpec> take_until(std::deque<RequestSpec>& pending, Time now);

// Closed loop: `concurrency` users each keep one request in the system; when one finishes at time t, its user
// issues the next request arriving at t (the scheduler picks it up at the next step), until `total` were issued.
class ClosedLoopSource final : public RequestSource {
 public:
  // Throws duplex::Error unless concurrency >= 1 and total >= 1.
  ClosedLoopSource(std::int64_t concurrency, std::int64_t total, LengthDistribution lengths, std::uint64_t seed);
  std::vector<RequestSpec> take_arrived(Time now) override;
  std::optional<Time> next_arrival() const override;
  void on_finished(RequestId id, Time when) override;
  bool exhausted() const override { return issued_ == total_ && pending_.empty(); }
  std::int64_t total_requests() const override { return total_; }

 private:
  void issue(Time arrival);
  std::int64_t total_;
  std::int64_t issued_ = 0;
  LengthSampler lengths_;
  std::deque<RequestSpec> pending_;  // issued, not yet taken; arrival order
};

// Poisson arrivals at `rate_per_s` requests per second (exponential gaps), `total` requests from t = 0.
class PoissonSource final : public RequestSource {
 public:
  // Throws duplex::Error unless rate_per_s > 0 and total >= 1.
  PoissonSource(double rate_per_s, std::int64_t total, LengthDistribution lengths, std::uint64_t seed);
  std::vector<RequestSpec> take_arrived(Time now) override;
  std::optional<Time> next_arrival() const override;
  void on_finished(RequestId, Time) override {}
  bool exhausted() const override { return !next_; }
  std::int64_t total_requests() const override { return total_; }

 private:
  void generate_next();
  double rate_per_s_;
  std::int64_t total_;
  std::int64_t generated_ = 0;
  double clock_s_ = 0.0;
  Rng gaps_;
  LengthSampler lengths_;
  std::optional<RequestSpec> next_;
};

// Replays a list of requests (from a trace file). They are sorted by arrival (stable) and renumbered 0..n-1.
class TraceSource final : public RequestSource {
 public:
  explicit TraceSource(std::vector<RequestSpec> requests);
  std::vector<RequestSpec> take_arrived(Time now) override;
  std::optional<Time> next_arrival() const override;
  void on_finished(RequestId, Time) override {}
  bool exhausted() const override { return next_ == requests_.size(); }
  std::int64_t total_requests() const override { return static_cast<std::int64_t>(requests_.size()); }

 private:
  std::vector<RequestSpec> requests_;
  std::size_t next_ = 0;
};

// Shared system prompts: every request's prompt begins with one of `groups` prompts of `tokens` tokens,
// picked uniformly per request from the seed, before its own tokens.
struct SharedPrefix {
  std::int64_t tokens = 0;  // >= 1
  std::int64_t groups = 1;  // >= 1
};

// Which of `prefix.groups` system prompts the request or conversation `key` gets, uniformly from `seed`, and
// the hash that stands for that system prompt.
std::uint64_t shared_prompt_group(const SharedPrefix& prefix, std::uint64_t seed, std::uint64_t key);
std::uint64_t shared_prompt_hash(const SharedPrefix& prefix, std::uint64_t group);

// Wraps a source: each request it returns gets `prefix.tokens` more prompt tokens and prompt hashes saying
// which shared prompt they are (one hash block of prefix.tokens tokens), for prefix caching.
class SharedPrefixSource final : public RequestSource {
 public:
  // Throws duplex::Error unless prefix.tokens >= 1 and prefix.groups >= 1.
  SharedPrefixSource(std::unique_ptr<RequestSource> inner, SharedPrefix prefix, std::uint64_t seed);
  std::vector<RequestSpec> take_arrived(Time now) override;
  std::optional<Time> next_arrival() const override { return inner_->next_arrival(); }
  void on_finished(RequestId id, Time when) override { inner_->on_finished(id, when); }
  bool exhausted() const override { return inner_->exhausted(); }
  std::int64_t total_requests() const override { return inner_->total_requests(); }

 private:
  std::unique_ptr<RequestSource> inner_;
  SharedPrefix prefix_;
  std::uint64_t seed_;
};

}  // namespace duplex::runtime
