#pragma once
// The PIM side of functional emulation on the emulated Duplex device: a PimUnit that runs every PIM op through
// the C driver API (duplex/driver/duplex_driver.h) on the SystemC DuplexDevice, i.e. host -> DMA -> command
// ring -> Logic-PIM -> completion queue. Library duplex_functional_device (links SystemC through duplex_driver).
//
// Memory placement (DUPLEX.md bank-bundle spaces): weights (and experts) round-robin over the 4 spaces
// (DUPLEX_SPACE_EXPERT), cached on the device by host pointer for the unit's lifetime, so the caller's weight
// buffers must stay unchanged while the unit lives; decode K / V in the decode-KV spaces; activations and
// results in any space. Per op only activations and K / V move host <-> device.
// The device computes with its system's configured datapath (golden), so results equal the datapath PIM unit
// of the same kind bit for bit.
#include <memory>

#include "duplex/base/device_spec.hpp"
#include "duplex/runtime/functional/pim_unit.hpp"

namespace duplex::runtime::functional {

// Opens the driver's device for `system` (from its YAML file or built-in preset, which must still resolve to
// system.resolved_yaml) and closes it with the unit. One device
// per process at a time (driver limit): duplex::Error, naming the driver's status and message, when the device
// cannot be opened (another unit alive, a system without Logic-PIM, a different system than the process's
// first). Every op throws duplex::Error on a driver or device error (e.g. an operand larger than a logic-die
// buffer). describe() includes the device's counters so far (simulated time, commands, dynamic energy).
std::unique_ptr<PimUnit> make_device_pim_unit(const SystemSpec& system);

}  // namespace duplex::runtime::functional
