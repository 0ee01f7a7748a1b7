// `duplex report RESULTS_DIR -o report.html`: one self-contained HTML page with SVG charts from a sweep.
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <memory>
#include <string>

#include "commands.hpp"
#include "duplex/base/error.hpp"
#include "report_data.hpp"
#include "report_html.hpp"
#include "sweep_files.hpp"

namespace duplex::host {
namespace {

struct ReportOptions {
  std::string results_dir;
  std::string out_file = "report.html";
};

void run_report(const ReportOptions& o) {
  const std::filesystem::path out = std::filesystem::absolute(o.out_file);
  if (!std::filesystem::is_directory(out.parent_path()))
    throw Error(fmt::format("-o {}: the folder {} does not exist", o.out_file, out.parent_path().string()));
  // A point file whose values are not of the types the charts read (a file edited by hand) is an error of
  // the folder, not a crash.
  std::string html;
  ResultFolder folder;
  try {
    folder = load_result_folder(o.results_dir);
    html = build_report(folder);
  } catch (const nlohmann::json::exception& e) {
    throw Error(
        fmt::format("{}: a point file holds a value of another type or range than duplex sweep "
                    "writes ({})",
                    o.results_dir, e.what()));
  }
  write_file_atomic(out, html);
  std::printf("%s: %zu points -> %s\n", folder.study.c_str(), folder.points.size(), o.out_file.c_str());
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto o = std::make_shared<ReportOptions>();
  CLI::App* c = app.add_subcommand("report", "HTML report with SVG charts from a duplex sweep result folder");
  c->add_option("results", o->results_dir, "Result folder written by duplex sweep")->required();
  c->add_option("-o,--out", o->out_file, "HTML file to write")->capture_default_str();
  c->callback([o] { run_report(*o); });
}

}  // namespace duplex::host
