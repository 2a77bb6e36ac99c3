// Package channelstest is the shared test suite of channels adapters, as
// Watermill's pubsub/tests is for its Pub/Subs: every semantic of the
// library (delivery, groups, retries, dead letters, MaxInFlight, ordering,
// namespaces, context propagation, draining) asserted once, plus the fault
// scenarios (consumers killed mid-stream, broker restarts, stops under load,
// frozen and slow links, hostile bytes written below the adapter) and the
// limits of what a broker accepts. Any adapter, in this repository or
// another, runs it with a Target:
//
//	func TestConformance(t *testing.T) {
//		channelstest.Run(t, channelstest.Target{
//			Name:       "mine",
//			NewAdapter: func() (broker.Adapter, error) { return mine.New(url) },
//		})
//	}
//
// A fault scenario is declared only for targets that have its hook
// (Processes, ClaimTime, Restart, BrokerDown/BrokerUp, Hostile, Linked),
// so a new adapter fills what its broker allows and gets every scenario
// that applies. Targets whose consumers run in child processes also need
// Main as the package's TestMain. Specs are Ginkgo specs labelled with the
// target's name: -ginkgo.label-filter and -ginkgo.focus select them.
//
// A broker that does not answer (Target.Probe) skips the target's specs,
// or fails them when CHANNELS_E2E_REQUIRE=1. The fault lines are printed
// and appended to the file named by CHANNELS_FAULT_REPORT.
package channelstest
