#include "duplex/base/device_spec.hpp"

#include <fmt/format.h>

#include "duplex/base/error.hpp"

namespace duplex {

XpuSpec read_xpu(const ConfigNode& n) {
  XpuSpec x;
  if (n.get<std::string>("kind") != "xpu") n.fail("kind", "is not xpu", "kind: xpu");
  x.name = n.get<std::string>("name");
  x.peak_fp16 = n.get_positive<FlopRate>("peak_fp16");
  x.peak_fp8 = n.get_positive<FlopRate>("peak_fp8");
  x.peak_int8 = n.get_positive<FlopRate>("peak_int8");
  x.peak_fp32 = n.get_positive<FlopRate>("peak_fp32");
  const ConfigNode eff = n.at("efficiency");
  x.gemm_efficiency = eff.get<double>("gemm");
  x.memory_efficiency = eff.get<double>("memory");
  for (const char* k : {"gemm", "memory"}) {
    const double v = eff.get<double>(k);
    if (v <= 0 || v > 1) eff.fail(k, fmt::format("{} is not a fraction of peak", v), "a number in (0, 1]");
  }
  eff.finish();
  x.launch_overhead = n.get<Time>("kernel_launch_overhead");
  x.sram_per_sm = n.get_positive<ByteSize>("sram_per_sm");
  x.sms = static_cast<int>(n.get_int("sms", 1, 100000));
  n.finish();
  return x;
}

HbmSpec read_hbm(const ConfigNode& n) {
  HbmSpec h;
  if (n.get<std::string>("kind") != "hbm3") n.fail("kind", "is not hbm3", "kind: hbm3");
  h.name = n.get<std::string>("name");
  h.data_rate = n.get_positive<DataRate>("data_rate");
  if (h.data_rate.si() > 1e12)  // HBM3 runs at 6.4 Gb/s per pin, HBM4 at 8-10
    n.fail("data_rate", fmt::format("is {:g} Gb/s per pin", h.data_rate.si() / 1e9), "at most 1000 Gbps");
  const ConfigNode o = n.at("organization");
  auto count = [&](const char* k) { return static_cast<int>(o.get_int(k, 1, 1 << 24)); };
  h.org.channels = count("channels");
  h.org.pseudo_channels_per_channel = count("pseudo_channels_per_channel");
  h.org.ranks = count("ranks");
  h.org.bank_groups = count("bank_groups");
  h.org.banks_per_group = count("banks_per_group");
  h.org.rows = count("rows");
  h.org.row_size = o.get_positive<ByteSize>("row_size");
  h.org.access_granularity = o.get_positive<ByteSize>("access_granularity");
  h.org.burst_length = count("burst_length");
  h.org.dq_per_pseudo_channel = count("dq_per_pseudo_channel");
  if (h.org.row_size.bytes % h.org.access_granularity.bytes != 0)
    o.fail("row_size", "is not a multiple of access_granularity", "a whole number of accesses per row");
  if (static_cast<std::uint64_t>(h.org.dq_per_pseudo_channel) * h.org.burst_length / 8 !=
      h.org.access_granularity.bytes)
    o.fail("access_granularity", "differs from dq_per_pseudo_channel x burst_length / 8",
           fmt::format("{} B", h.org.dq_per_pseudo_channel * h.org.burst_length / 8));
  o.finish();

  const ConfigNode t = n.at("timing");
  // DRAM timings are picoseconds to microseconds (tREFI, tRFC a few); the cycle model counts whole
  // picoseconds, so each lies in [1 ps, 1 ms].
  auto time = [&](const char* k) {
    const Time v = t.get_positive<Time>(k);
    if (v < ps(1) || v > ms(1)) t.fail(k, fmt::format("is {}", format_time(v)), "between 1 ps and 1 ms");
    return v;
  };
  HbmTiming& x = h.timing;
  x.tCK = time("tCK");
  x.tCL = time("tCL");
  x.tRCD = time("tRCD");
  x.tRP = time("tRP");
  x.tRAS = time("tRAS");
  x.tFAW = time("tFAW");
  x.tCCD_S = time("tCCD_S");
  x.tCCD_L = time("tCCD_L");
  x.tRRD_S = time("tRRD_S");
  x.tRRD_L = time("tRRD_L");
  x.tWL = time("tWL");
  x.tWR = time("tWR");
  x.tWTR_S = time("tWTR_S");
  x.tWTR_L = time("tWTR_L");
  x.tRTP = time("tRTP");
  x.tREFI = time("tREFI");
  x.tRFC = time("tRFC");
  if (x.tRAS < x.tRCD) t.fail("tRAS", "is shorter than tRCD", "tRAS >= tRCD");
  if (x.tCCD_S < x.tCK) t.fail("tCCD_S", "is shorter than tCK", "tCCD_S >= tCK");
  if (x.tFAW < x.tRRD_S) t.fail("tFAW", "is shorter than tRRD_S", "tFAW >= tRRD_S");
  if (x.tCCD_L < x.tCCD_S) t.fail("tCCD_L", "is shorter than tCCD_S", "tCCD_L >= tCCD_S");
  if (x.tRRD_L < x.tRRD_S) t.fail("tRRD_L", "is shorter than tRRD_S", "tRRD_L >= tRRD_S");
  if (x.tRFC >= x.tREFI) t.fail("tRFC", "is not shorter than tREFI", "tRFC < tREFI");
  t.finish();
  n.finish();
  return h;
}

PimSpec read_pim(const ConfigNode& n) {
  PimSpec p;
  const std::string kind = n.get_enum("kind", {"logic-pim", "bankgroup-pim", "bank-pim"});
  p.name = n.get<std::string>("name");
  p.clock = n.get_positive<Frequency>("clock");
  p.command_latency = n.get<Time>("command_latency");
  if (kind == "logic-pim" || kind == "bankgroup-pim") {
    p.kind = kind == "logic-pim" ? PimKind::kLogicPim : PimKind::kBankGroupPim;
    p.gemm_modules = static_cast<int>(n.get_int("gemm_modules", 1, 1 << 16));
    p.macs_per_module = static_cast<int>(n.get_int("macs_per_module", 1, 1 << 20));
    p.module_buffer = n.get_positive<ByteSize>("module_buffer");
    p.input_buffer = n.get_positive<ByteSize>("input_buffer");
    p.temp_buffer = n.get_positive<ByteSize>("temp_buffer");
    p.softmax_buffer = n.get_positive<ByteSize>("softmax_buffer");
    const ConfigNode b = n.at("bundle");
    p.banks_per_bundle = static_cast<int>(b.get_int("banks_per_bundle", 1, 64));
    p.banks_per_group_read = static_cast<int>(b.get_int("banks_per_group_read", 1, 64));
    b.finish();
    // Elements per cycle of the softmax and activation units: at most 2^20 (lanes are counted in integers).
    auto per_cycle = [&](const char* k) {
      const double v = n.get_positive<double>(k);
      if (v > 1048576.0) n.fail(k, fmt::format("is {}", v), "at most 1048576 elements per cycle");
      return v;
    };
    p.softmax_elements_per_cycle = per_cycle("softmax_elements_per_cycle");
    p.activation_elements_per_cycle = per_cycle("activation_elements_per_cycle");
    p.datapath = n.get_enum("datapath", {"golden", "rtl"});
    if (p.kind == PimKind::kLogicPim || n.has("memory_spaces") || n.has("kv_spaces")) {
      p.memory_spaces = static_cast<int>(n.get_int("memory_spaces", 1, 1024));
      p.kv_spaces = static_cast<int>(n.get_int("kv_spaces", 1, 1024));
      if (p.kv_spaces > p.memory_spaces)
        n.fail("kv_spaces", fmt::format("{} is more than memory_spaces ({})", p.kv_spaces, p.memory_spaces),
               fmt::format("an integer in [1, {}] (equal: no prefill space)", p.memory_spaces));
    }
    if (auto a = n.find("area")) {
      PimAreaSpec x;
      x.tsv = a->get_positive<Area>("tsv");
      x.gemm_modules = a->get_positive<Area>("gemm_modules");
      x.buffers = a->get_positive<Area>("buffers");
      x.softmax = a->get_positive<Area>("softmax");
      x.logic_die = a->get_positive<Area>("logic_die");
      const ConfigNode at = a->at("at");
      x.at_gemm_modules = static_cast<int>(at.get_int("gemm_modules", 1, 1 << 16));
      x.at_macs_per_module = static_cast<int>(at.get_int("macs_per_module", 1, 1 << 20));
      x.at_buffers = at.get_positive<ByteSize>("buffers");
      at.finish();
      a->finish();
      p.area = x;
    }
  } else {
    p.kind = PimKind::kBankPim;
    p.bandwidth_multiplier = n.get_positive<double>("bandwidth_multiplier");
    p.peak_op_per_byte = n.get_positive<double>("peak_op_per_byte");
  }
  n.finish();
  return p;
}

FlopRate PimSpec::peak_flops_per_stack(const HbmSpec& hbm) const {
  if (kind == PimKind::kBankPim)
    return flop_per_s(peak_op_per_byte * internal_bandwidth_per_stack(hbm).si());
  return flop_per_s(2.0 * gemm_modules * macs_per_module * clock.si());
}

Bandwidth PimSpec::internal_bandwidth_per_stack(const HbmSpec& hbm) const {
  if (kind == PimKind::kBankPim) return hbm.stack_bandwidth() * bandwidth_multiplier;
  // Per pseudo-channel: every bank group delivers banks_per_group_read accesses per tCCD_L.
  const double bytes_per_tccd_l = static_cast<double>(banks_per_group_read) * hbm.org.bank_groups *
                                  static_cast<double>(hbm.org.access_granularity.bytes);
  return bytes_per_s(bytes_per_tccd_l / hbm.timing.tCCD_L.si() * hbm.org.pseudo_channels());
}

LinkSpec read_links(const ConfigNode& n) {
  LinkSpec l;
  if (n.get<std::string>("kind") != "links") n.fail("kind", "is not links", "kind: links");
  l.nvlink_bandwidth = n.get_positive<Bandwidth>("nvlink_bandwidth");
  l.nvlink_latency = n.get<Time>("nvlink_latency");
  l.infiniband_bandwidth = n.get_positive<Bandwidth>("infiniband_bandwidth");
  l.infiniband_latency = n.get<Time>("infiniband_latency");
  l.devices_per_node = static_cast<int>(n.get_int("devices_per_node", 1, 1024));
  if (n.has("comm_sms"))  // documented default 20
    l.comm_sms = static_cast<int>(n.get_int("comm_sms", 0, 100000));
  if (n.has("host_kv_offload")) l.host_kv_offload = n.get<ByteSize>("host_kv_offload");
  if (n.has("host_bandwidth") || l.host_kv_offload.bytes > 0)
    l.host_bandwidth = n.get_positive<Bandwidth>("host_bandwidth");
  if (n.has("host_latency") || l.host_kv_offload.bytes > 0) l.host_latency = n.get<Time>("host_latency");
  if (n.has("host_kv_load"))
    l.host_kv_layerwise = n.get_enum("host_kv_load", {"serial", "layerwise"}) == "layerwise";
  if (n.has("disk_kv_offload")) l.disk_kv_offload = n.get<ByteSize>("disk_kv_offload");
  if (l.disk_kv_offload.bytes > 0 && l.host_kv_offload.bytes == 0)
    n.fail("disk_kv_offload", "a disk tier sits behind the host tier, and there is none",
           "host_kv_offload above 0 beside it, or disk_kv_offload: 0GiB");
  if (n.has("disk_bandwidth") || l.disk_kv_offload.bytes > 0)
    l.disk_bandwidth = n.get_positive<Bandwidth>("disk_bandwidth");
  if (n.has("disk_latency") || l.disk_kv_offload.bytes > 0) l.disk_latency = n.get<Time>("disk_latency");
  auto scope_of = [&](const char* key) {
    const std::string scope = n.get_enum(key, {"device", "node", "cluster"});
    return scope == "node"      ? HostKvScope::node
           : scope == "cluster" ? HostKvScope::cluster
                                : HostKvScope::device;
  };
  if (n.has("host_kv_scope")) l.host_kv_scope = scope_of("host_kv_scope");
  if (n.has("disk_kv_scope")) {
    l.disk_kv_scope = scope_of("disk_kv_scope");
    if (l.disk_kv_scope != HostKvScope::device && l.disk_kv_offload.bytes == 0)
      n.fail("disk_kv_scope", "shares a disk tier, and there is none", "disk_kv_offload above 0 beside it");
  }
  n.finish();
  return l;
}

EnergyTable read_energy(const ConfigNode& n) {
  EnergyTable e;
  e.file = n.file();
  if (n.get<std::string>("kind") != "energy") n.fail("kind", "is not energy", "kind: energy");
  for (const char* group : {"dram", "compute", "links"}) {
    const ConfigNode g = n.at(group);
    for (const auto& k : g.keys()) e.actions[std::string(group) + "." + k] = g.get<Energy>(k);
    g.finish();
  }
  const ConfigNode s = n.at("static");
  for (const auto& k : s.keys()) e.static_power[k] = s.get<Power>(k);
  s.finish();
  n.finish();
  return e;
}

Energy EnergyTable::price(std::string_view action) const {
  auto it = actions.find(std::string(action));
  if (it == actions.end())
    throw Error(fmt::format("{}: no energy entry for action \"{}\"; add it to the energy table (actions "
                            "known: {})", file, action, actions.size()));
  return it->second;
}

Power EnergyTable::static_of(std::string_view component) const {
  auto it = static_power.find(std::string(component));
  if (it == static_power.end())
    throw Error(fmt::format("{}: no static power entry for \"{}\" under static:", file, component));
  return it->second;
}

namespace {

// Key pipeline_partition of system node n: "a,b,..." (vLLM's VLLM_PP_LAYER_PARTITION), one count >= 1 per
// stage of `stages` (pipeline_parallel > 1).
std::vector<int> read_pipeline_partition(const ConfigNode& n, int stages) {
  const std::string text = n.get<std::string>("pipeline_partition");
  const std::string expected = fmt::format(
      "the layers of each of pipeline_parallel's {} stages, first to last, comma-separated (vLLM's "
      "VLLM_PP_LAYER_PARTITION), e.g. \"15,16,15,15\"",
      stages);
  if (stages <= 1)
    n.fail("pipeline_partition", fmt::format("\"{}\" beside pipeline_parallel 1", text),
           "pipeline_parallel > 1, or no pipeline_partition");
  std::vector<int> counts;
  std::size_t begin = 0;
  while (true) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    const std::string field = text.substr(begin, end - begin);
    const std::size_t first = field.find_first_not_of(' '), last = field.find_last_not_of(' ');
    const std::string digits = first == std::string::npos ? "" : field.substr(first, last - first + 1);
    if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(digits) < 1)
      n.fail("pipeline_partition", fmt::format("\"{}\": \"{}\" is not a layer count >= 1", text, field),
             expected);
    counts.push_back(std::stoi(digits));
    if (end == text.size()) break;
    begin = end + 1;
  }
  if (static_cast<int>(counts.size()) != stages)
    n.fail("pipeline_partition", fmt::format("\"{}\" gives {} stages", text, counts.size()), expected);
  return counts;
}

}  // namespace

SystemSpec read_system(const ConfigNode& n) {
  SystemSpec s;
  s.file = n.file();
  s.name = n.get<std::string>("name");
  s.description = n.get<std::string>("description");
  s.xpu = read_xpu(n.at("xpu"));
  {
    const ConfigNode m = n.at("memory");
    s.stacks = static_cast<int>(m.get_int("stacks", 1, 64));
    s.memory = read_hbm(m);
  }
  if (auto p = n.find("pim")) s.pim = read_pim(*p);
  s.links = read_links(n.at("links"));
  if (s.links.comm_sms >= s.xpu.sms)
    n.at("links").fail(
        "comm_sms", fmt::format("{} leaves none of the xPU's {} SMs to compute", s.links.comm_sms, s.xpu.sms),
        fmt::format("0..{}", s.xpu.sms - 1));
  s.energy = read_energy(n.at("energy"));
  const ConfigNode d = n.at("devices_per_model");
  for (const auto& k : d.keys()) s.devices_per_model[k] = static_cast<int>(d.get_int(k, 1, 1 << 16));
  if (!s.devices_per_model.count("default")) d.fail("default", "missing required key");
  d.finish();
  s.device_multiplier = static_cast<int>(n.get_int("device_multiplier", 1, 64));
  const ConfigNode c = n.at("coprocessing");
  s.coprocess_experts = c.get<bool>("experts");
  s.coprocess_attention = c.get<bool>("attention");
  c.finish();
  s.expert_tensor_parallel = n.get<bool>("expert_tensor_parallel");
  if (n.has("attention_data_parallel")) {  // documented default false
    s.attention_data_parallel = n.get<bool>("attention_data_parallel");
    if (s.attention_data_parallel && s.expert_tensor_parallel)
      n.fail(
          "attention_data_parallel",
          "true beside expert_tensor_parallel: true is not modelled (experts tensor parallel in a node whose "
          "devices each hold other requests)",
          "false, or expert_tensor_parallel: false");
  }
  if (n.has("pipeline_parallel")) {  // documented default 1
    s.pipeline_parallel = static_cast<int>(n.get_int("pipeline_parallel", 1, 64));
    if (s.pipeline_parallel > 1 && s.attention_data_parallel)
      n.fail("pipeline_parallel",
             fmt::format("{} beside attention_data_parallel: true is not modelled", s.pipeline_parallel),
             "1, or attention_data_parallel: false");
  }
  if (n.has("pipeline_partition")) s.pipeline_partition = read_pipeline_partition(n, s.pipeline_parallel);
  if (n.has("expert_all_to_all")) {  // documented default auto
    const std::string mode = n.get_enum("expert_all_to_all", {"low_latency", "normal", "auto"});
    for (const ExpertAllToAll a :
         {ExpertAllToAll::low_latency, ExpertAllToAll::normal, ExpertAllToAll::auto_by_step})
      if (mode == to_string(a)) s.expert_all_to_all = a;
  }
  if (n.has("expert_all_to_all_max_tokens"))  // documented default 0 (not modelled)
    s.expert_all_to_all_max_tokens = n.get_int("expert_all_to_all_max_tokens", 0, 1 << 20);
  if (n.has("two_batch_overlap")) {  // documented default false
    s.two_batch_overlap = n.get<bool>("two_batch_overlap");
    if (s.two_batch_overlap && s.pipeline_parallel > 1)
      n.fail("two_batch_overlap",
             fmt::format("true beside pipeline_parallel {} is not modelled (each stage already overlaps the "
                         "batches in flight)",
                         s.pipeline_parallel),
             "false, or pipeline_parallel: 1");
  }
  if (n.has("two_batch_overlap_threshold")) {  // documented default 0.48
    s.two_batch_overlap_threshold = n.get<double>("two_batch_overlap_threshold");
    if (!(s.two_batch_overlap_threshold >= 0 && s.two_batch_overlap_threshold <= 0.5))
      n.fail("two_batch_overlap_threshold",
             fmt::format("{} is outside 0..0.5", s.two_batch_overlap_threshold),
             "a share of a step's tokens from 0 (never split a prompt) to 0.5, such as SGLang's 0.48");
  }
  if (n.has("data_parallel_balance")) {  // documented default least-loaded
    const std::string balance =
        n.get_enum("data_parallel_balance", {"round-robin", "least-loaded", "cache-aware"});
    for (const DataParallelBalance b : {DataParallelBalance::round_robin, DataParallelBalance::least_loaded,
                                        DataParallelBalance::cache_aware})
      if (balance == to_string(b)) s.data_parallel_balance = b;
  }
  if (auto b = n.find("expert_load_balancing")) {
    ExpertBalancing e;  // each key's documented default
    if (b->has("redundant_experts"))
      e.redundant_experts = static_cast<int>(b->get_int("redundant_experts", 0, 4096));
    if (b->has("window")) e.window = b->get_int("window", 1, 1'000'000'000);
    if (b->has("interval")) e.interval = b->get_int("interval", 1, 1'000'000'000);
    // Each step's counts are summed for every rebalancing whose window holds it: at most 64 at once.
    if (e.window > 64 * e.interval)
      b->fail(
          "window",
          fmt::format("{} steps span more than 64 intervals of {} (each step counted in every rebalancing "
                      "whose window holds it)",
                      e.window, e.interval),
          fmt::format("at most 64 x interval = {} steps", 64 * e.interval));
    b->finish();
    s.expert_balancing = e;
  }
  if (auto split = n.find("split")) {
    s.split_prefill_fraction = split->get<double>("prefill_fraction");
    if (!(s.split_prefill_fraction > 0 && s.split_prefill_fraction < 1))
      split->fail("prefill_fraction", fmt::format("{} is not strictly between 0 and 1", s.split_prefill_fraction),
                  "a fraction such as 0.5");
    auto instances = [&](const char* key) {
      return split->has(key) ? static_cast<int>(split->get_int(key, 1, 4096)) : 1;  // documented default 1
    };
    s.split_prefill_instances = instances("prefill_instances");
    s.split_decode_instances = instances("decode_instances");
    if (split->has("decode_router"))  // documented default least-loaded
      s.split_decode_by_free_kv =
          split->get_enum("decode_router", {"least-loaded", "most-free-kv"}) == "most-free-kv";
    if (split->has("kv_transfer"))  // documented default after_prefill
      s.split_kv_layerwise = split->get_enum("kv_transfer", {"after_prefill", "layerwise"}) == "layerwise";
    if (const auto prefill = split->find("prefill_system")) {
      auto p = std::make_shared<SystemSpec>(read_system(*prefill));
      if (p->split_prefill_fraction > 0 || p->heterogeneous())
        split->fail("prefill_system", fmt::format("system {} is itself split or heterogeneous", p->name),
                    "a system whose devices both prefill and decode, e.g. {preset: systems/gpu}");
      if (p->energy.actions != s.energy.actions || p->energy.static_power != s.energy.static_power)
        split->fail("prefill_system",
                    fmt::format("system {} prices energy from {}, this system from {}", p->name,
                                p->energy.file, s.energy.file),
                    "one energy table for both pools");
      s.split_prefill_system = std::move(p);
    }
    split->finish();
  }
  if (auto h = n.find("heterogeneous")) {
    s.pim_devices_per_gpu = static_cast<int>(h->get_int("pim_devices_per_gpu", 1, 64));
    h->finish();
    if (!s.pim || s.pim->kind != PimKind::kLogicPim)
      n.fail("heterogeneous", "needs the PIM devices' units", "a pim: section of kind logic-pim");
    if (s.coprocess_experts)
      n.fail("coprocessing", "expert co-processing on a heterogeneous system: the experts' weights live only on the "
             "PIM devices", "coprocessing: {experts: false, ...}");
    if (s.split_prefill_fraction > 0)
      n.fail("split", "a heterogeneous system cannot also be split into prefill / decode pools",
             "either heterogeneous: or split:");
  }
  if (!s.pim && (s.coprocess_experts || s.coprocess_attention))
    n.fail("coprocessing", "co-processing is enabled on a system without pim", "a pim: section, or false");
  if (s.attention_data_parallel && s.heterogeneous())
    n.fail("attention_data_parallel", "true on a heterogeneous system is not modelled", "false");
  if (s.expert_balancing && s.heterogeneous())
    n.fail("expert_load_balancing",
           "on a heterogeneous system is not modelled (the experts live on PIM devices)",
           "no expert_load_balancing section");
  if (s.pipeline_parallel > 1 && (s.heterogeneous() || s.split_prefill_fraction > 0))
    n.fail("pipeline_parallel",
           fmt::format("{} on a {} system is not modelled", s.pipeline_parallel,
                       s.heterogeneous() ? "heterogeneous" : "split"),
           "1");
  n.finish();
  s.resolved_yaml = n.dump();
  return s;
}

const char* to_string(HostKvScope s) {
  switch (s) {
    case HostKvScope::device:
      return "device";
    case HostKvScope::node:
      return "node";
    case HostKvScope::cluster:
      return "cluster";
  }
  return "unknown";
}

const char* to_string(ExpertAllToAll a) {
  switch (a) {
    case ExpertAllToAll::low_latency:
      return "low_latency";
    case ExpertAllToAll::normal:
      return "normal";
    case ExpertAllToAll::auto_by_step:
      return "auto";
  }
  return "?";
}

const char* to_string(DataParallelBalance b) {
  switch (b) {
    case DataParallelBalance::round_robin:
      return "round-robin";
    case DataParallelBalance::least_loaded:
      return "least-loaded";
    case DataParallelBalance::cache_aware:
      return "cache-aware";
  }
  return "?";
}

SystemSpec load_system(std::string_view name_or_path) {
  return read_system(ConfigNode::load(name_or_path, "systems"));
}

bool SystemSpec::uses_prefill_space() const {
  return pim && pim->kind == PimKind::kLogicPim && !heterogeneous() && split_prefill_fraction <= 0 &&
         pim->kv_spaces < pim->memory_spaces;
}

int SystemSpec::devices_for(std::string_view model_name) const {
  auto it = devices_per_model.find(std::string(model_name));
  const int base = it != devices_per_model.end() ? it->second : devices_per_model.at("default");
  return base * device_multiplier;
}

FlopRate SystemSpec::pim_peak_flops() const {
  return pim ? pim->peak_flops_per_stack(memory) * stacks : FlopRate{};
}

Bandwidth SystemSpec::pim_bandwidth() const {
  return pim ? pim->internal_bandwidth_per_stack(memory) * stacks : Bandwidth{};
}

}  // namespace duplex
