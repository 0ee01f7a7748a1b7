// `duplex sweep STUDY.yaml -j N -o DIR`: run a reproduction study's design points in parallel, resumable.
#include <cstdio>
#include <fmt/format.h>
#include <memory>
#include <string>

#include "commands.hpp"
#include "sweep_runner.hpp"
#include "sweep_study.hpp"

namespace duplex::host {
namespace {

struct SweepOptions {
  std::string study_file;
  std::string out_dir;
  int jobs = 1;
  bool quiet = false;
  bool dry_run = false;
};

void run_sweep_command(const SweepOptions& o) {
  const Study study = load_study(o.study_file);
  const std::string out = o.out_dir.empty() ? "results/" + study.name : o.out_dir;
  if (o.dry_run) {
    for (const auto& p : study.points()) std::printf("%s\n", p.id.c_str());
    return;
  }
  auto print = [&](const std::string& line) {
    if (!o.quiet) std::fprintf(stderr, "%s\n", line.c_str());
  };
  print(fmt::format("study {}: {} points, {} in parallel, results in {}", study.name, study.points().size(), o.jobs, out));
  const SweepSummary s = run_sweep(study, out, o.jobs, print);
  std::printf("%s: %lld points (%lld run, %lld reused), %lld failed, %.1f s wall; %s/combined.csv\n",
              study.name.c_str(), static_cast<long long>(s.points), static_cast<long long>(s.ran),
              static_cast<long long>(s.skipped), static_cast<long long>(s.failed), s.wall_s, out.c_str());
}

}  // namespace

void add_sweep_command(CLI::App& app) {
  auto o = std::make_shared<SweepOptions>();
  CLI::App* c = app.add_subcommand("sweep", "Run a study (models x systems x lengths x batch x load), resumable");
  c->add_option("study", o->study_file, "Study YAML (bench/repro/*.yaml)")->required();
  c->add_option("-o,--out", o->out_dir, "Result folder (default: results/<study name>)");
  c->add_option("-j,--jobs", o->jobs, "Design points run in parallel")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_flag("--dry-run", o->dry_run, "Check the study and list its points; run nothing");
  c->add_flag("-q,--quiet", o->quiet, "No per-point progress lines on stderr");
  c->callback([o] { run_sweep_command(*o); });
}

}  // namespace duplex::host
