package e2e

import (
	"testing"

	"github.com/microchannels/channels/channelstest"
)

// targets are the brokers of this repository's e2e run; each
// target_<name>_test.go file adds its own from init.
var targets []channelstest.Target

func registerTarget(t channelstest.Target) { targets = append(targets, t) }

// TestMain lets the fault suite re-execute this binary as a consumer child.
func TestMain(m *testing.M) { channelstest.Main(m, targets...) }

// TestConformance runs the conformance, fault, limits and observability
// specs on every target (-ginkgo.label-filter=<name> selects one).
func TestConformance(t *testing.T) { channelstest.Run(t, targets...) }
