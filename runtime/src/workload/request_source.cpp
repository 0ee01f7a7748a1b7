#include "duplex/runtime/workload/request_source.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex::runtime {
std::vector<RequestSpec> take_until(std::deque<RequestSpec>& pending, Time now) {
  std::vector<RequestSpec> out;
  while (!pending.empty() && pending.front().arrival <= now) {
    out.push_back(pending.front());
    pending.pop_front();
  }
  return out;
}

ClosedLoopSource::ClosedLoopSource(std::int64_t concurrency, std::int64_t total, LengthDistribution lengths,
                                   std::uint64_t seed)
    : total_(total), lengths_(lengths, derive_seed(seed, seed_stream::lengths)) {
  if (concurrency < 1) throw Error(fmt::format("closed-loop concurrency is {}; expected >= 1 user", concurrency));
  if (total < 1) throw Error(fmt::format("closed-loop request count is {}; expected >= 1", total));
  for (std::int64_t i = 0; i < std::min(concurrency, total); ++i) issue(Time{});
}

void ClosedLoopSource::issue(Time arrival) {
  const SampledLengths l = lengths_.sample();
  pending_.push_back(RequestSpec{issued_, arrival, l.input_tokens, l.output_tokens});
  ++issued_;
}

std::vector<RequestSpec> ClosedLoopSource::take_arrived(Time now) { return take_until(pending_, now); }

std::optional<Time> ClosedLoopSource::next_arrival() const {
  if (pending_.empty()) return std::nullopt;
  return pending_.front().arrival;
}

void ClosedLoopSource::on_finished(RequestId, Time when) {
  if (issued_ < total_) issue(when);
}

PoissonSource::PoissonSource(double rate_per_s, std::int64_t total, LengthDistribution lengths, std::uint64_t seed)
    : rate_per_s_(rate_per_s),
      total_(total),
      gaps_(derive_seed(seed, seed_stream::arrival_gaps)),
      lengths_(lengths, derive_seed(seed, seed_stream::lengths)) {
  if (!(rate_per_s > 0.0) || !std::isfinite(rate_per_s))
    throw Error(fmt::format("Poisson arrival rate is {} requests/s; expected a finite rate > 0", rate_per_s));
  if (total < 1) throw Error(fmt::format("Poisson request count is {}; expected >= 1", total));
  generate_next();
}

void PoissonSource::generate_next() {
  if (generated_ == total_) {
    next_.reset();
    return;
  }
  clock_s_ += gaps_.exponential(rate_per_s_);
  const SampledLengths l = lengths_.sample();
  next_ = RequestSpec{generated_, seconds(clock_s_), l.input_tokens, l.output_tokens};
  ++generated_;
}

std::vector<RequestSpec> PoissonSource::take_arrived(Time now) {
  std::vector<RequestSpec> out;
  while (next_ && next_->arrival <= now) {
    out.push_back(*next_);
    generate_next();
  }
  return out;
}

std::optional<Time> PoissonSource::next_arrival() const {
  if (!next_) return std::nullopt;
  return next_->arrival;
}

TraceSource::TraceSource(std::vector<RequestSpec> requests) : requests_(std::move(requests)) {
  std::stable_sort(requests_.begin(), requests_.end(),
                   [](const RequestSpec& a, const RequestSpec& b) { return a.arrival < b.arrival; });
  for (std::size_t i = 0; i < requests_.size(); ++i) requests_[i].id = static_cast<RequestId>(i);
}

std::vector<RequestSpec> TraceSource::take_arrived(Time now) {
  std::vector<RequestSpec> out;
  while (next_ < requests_.size() && requests_[next_].arrival <= now) out.push_back(requests_[next_++]);
  return out;
}

std::optional<Time> TraceSource::next_arrival() const {
  if (next_ == requests_.size()) return std::nullopt;
  return requests_[next_].arrival;
}

SharedPrefixSource::SharedPrefixSource(std::unique_ptr<RequestSource> inner, SharedPrefix prefix,
                                       std::uint64_t seed)
    : inner_(std::move(inner)), prefix_(prefix), seed_(derive_seed(seed, seed_stream::prefix_groups)) {
  if (prefix.tokens < 1)
    throw Error(fmt::format("shared prefix of {} tokens; expected >= 1 token", prefix.tokens));
  if (prefix.groups < 1)
    throw Error(fmt::format("shared prefix in {} groups; expected >= 1 group", prefix.groups));
}

std::uint64_t shared_prompt_group(const SharedPrefix& prefix, std::uint64_t seed, std::uint64_t key) {
  Rng pick(derive_seed(seed, key));
  return static_cast<std::uint64_t>(std::min(
      prefix.groups - 1, static_cast<std::int64_t>(pick.uniform01() * static_cast<double>(prefix.groups))));
}

std::uint64_t shared_prompt_hash(const SharedPrefix& prefix, std::uint64_t group) {
  return derive_seed(0x5eedf00dULL + static_cast<std::uint64_t>(prefix.tokens), group);
}

std::vector<RequestSpec> SharedPrefixSource::take_arrived(Time now) {
  std::vector<RequestSpec> out = inner_->take_arrived(now);
  for (RequestSpec& r : out) {
    // The group from (seed, id) alone, so it does not depend on when the request was taken.
    const std::uint64_t group = shared_prompt_group(prefix_, seed_, static_cast<std::uint64_t>(r.id));
    r.input_tokens += prefix_.tokens;
    r.content_hashes = {shared_prompt_hash(prefix_, group)};
    r.hash_block_tokens = prefix_.tokens;
    r.hashed_tokens = prefix_.tokens;
  }
  return out;
}

}  // namespace duplex::runtime
