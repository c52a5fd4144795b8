// Internal: files that survive a crash and never half-exist (checkpoints, the
// checkpoint manifest, safetensors). Every error is an InputError naming the file and
// the OS's reason.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "efsign/span.h"

namespace efsign::detail {

// Writes `parts` back to back to PATH.tmp, fsyncs it, renames it to PATH and fsyncs
// the folder. A failure removes PATH.tmp and leaves an existing PATH as it was.
// `what` names the file's kind in messages ("checkpoint", "model").
void write_file_durably(const std::string& path, const std::vector<Span<const std::byte>>& parts, const char* what);

// fsync of a folder, so that an entry created or renamed in it survives a crash.
void fsync_dir(const std::string& dir);

// The folder part of `path` ("." when there is none).
std::string parent_of(const std::string& path);

// mkdir -p.
void make_dirs(const std::string& dir, const char* what);

// Creates and removes a file in `dir`, to learn early (with the OS's reason) that it
// cannot be written.
void probe_writable(const std::string& dir, const char* what);

}  // namespace efsign::detail
