// The `qx` command line: a thin client that registers each subcommand from include/qx/cli/. Every
// qx::Error and every argument error ends as one line "qx <command>: <message>" and exit code 2; a
// training run stopped by Ctrl-C (train::Interrupted) ends with its one line and exit code 130, the
// shell's code for SIGINT.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

#if __has_include("qx/cli/ecg_command.hpp")
#include "qx/cli/ecg_command.hpp"
#define QX_HAVE_ECG_COMMAND 1
#endif
#if __has_include("qx/cli/explain_command.hpp")
#include "qx/cli/explain_command.hpp"
#define QX_HAVE_EXPLAIN_COMMAND 1
#endif
#if __has_include("qx/cli/train_command.hpp")
#include "qx/cli/train_command.hpp"
#define QX_HAVE_TRAIN_COMMAND 1
#endif
#if __has_include("qx/cli/reproduce_command.hpp")
#include "qx/cli/reproduce_command.hpp"
#define QX_HAVE_REPRODUCE_COMMAND 1
#endif
#include "qx/cli/version_command.hpp"
#include "qx/core/error.hpp"
#include "qx/train/interrupt.hpp"

int main(int argc, char** argv) {
  CLI::App app{"qx — train convolutional networks, explain their decisions, measure the explanations"};
  app.require_subcommand(1);
  qx::cli::add_version_flag(app);
#ifdef QX_HAVE_ECG_COMMAND
  qx::cli::add_ecg_command(app);
#endif
#ifdef QX_HAVE_EXPLAIN_COMMAND
  qx::cli::add_explain_command(app);
#endif
#ifdef QX_HAVE_TRAIN_COMMAND
  qx::cli::add_train_command(app);
#endif
#ifdef QX_HAVE_REPRODUCE_COMMAND
  qx::cli::add_reproduce_command(app);
#endif
  auto command_name = [&]() {
    std::string name = "qx";
    for (const CLI::App* sub = &app; !sub->get_subcommands().empty();) {
      sub = sub->get_subcommands().front();
      name += " " + sub->get_name();
    }
    return name;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);  // prints the version text on stdout, exit code 0
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s\n", command_name().c_str(), e.what());
    return 2;
  } catch (const qx::train::Interrupted& e) {
    std::fprintf(stderr, "%s: %s\n", command_name().c_str(), e.what());
    return 130;
  } catch (const qx::Error& e) {
    std::fprintf(stderr, "%s: %s\n", command_name().c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: unexpected error: %s\n", command_name().c_str(), e.what());
    return 1;
  }
  return 0;
}
