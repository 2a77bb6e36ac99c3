package channelstest

import (
	"context"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
)

// The fault suite: crashes, broker restarts, stops under load, slow
// handlers, hostile input and a broker that is down at start, written once
// and run on every registered target whose hooks (see Target) allow the
// scenario. Each scenario prints one line
//
//	fault <scenario> <target>: sent=N processed=N duplicates=N dead-lettered=N lost=N [details]
//
// (see report) and fails when lost > 0. Specs labelled "serial" restart or
// stop the shared broker: they run only with CHANNELS_E2E_SERIAL=1, in the
// second phase of `make test`, when no other test package runs.

// serialPhase reports whether the specs that disturb the shared broker may run.
func serialPhase() bool { return os.Getenv("CHANNELS_E2E_SERIAL") == "1" }

// itIf declares a spec only where it applies: a target without the hook a
// scenario needs, or a serial spec outside the serial phase (which restarts
// the shared brokers: CHANNELS_E2E_SERIAL=1 go test -race -count=1 ./e2e
// -run TestConformance -args -ginkgo.label-filter=serial, run by make test),
// has no spec at all rather than a skipped one.
func itIf(cond bool, text string, args ...any) {
	if cond {
		It(text, args...)
	}
}

var _ = specs(func() {
	Describe("fault", Label("fault"), func() {
		targetsMu.Lock()
		ts := append([]Target(nil), targets...)
		targetsMu.Unlock()
		for _, tg := range ts {
			Describe(tg.Name, Label(tg.Name), func() {
				faults(tg)
			})
		}
	})
})

// faultSuite declares the scenarios of one target; h is the harness of the
// running spec (set by BeforeEach).
type faultSuite struct {
	tg        Target
	h         *harness
	ctx       context.Context
	claimWait time.Duration
}

func faults(tg Target) {
	// claimWait covers a redelivery after a silent member: a few claim times.
	s := &faultSuite{tg: tg, ctx: context.Background(), claimWait: 3*tg.ClaimTime + time.Second}
	BeforeEach(func() { s.h = prepare(tg) })
	s.crashes()
	s.restarts()
	s.stops()
	s.hostiles()
	s.clusters()
}
