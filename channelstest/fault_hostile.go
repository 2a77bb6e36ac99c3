package channelstest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/gomega"

	"github.com/microchannels/channels"
	"github.com/microchannels/channels/broker"
)

// hostiles declares the hostile-input scenarios: a plain-driver producer writes hostile entries between valid messages.
func (s *faultSuite) hostiles() {
	tg, ctx := s.tg, s.ctx

	// 5. A plain-driver producer writes hostile entries between valid messages.
	// The consumer is a child process under a memory budget, with MaxInFlight 1
	// (FIFO): when it dies, the first hostile entry it left unaccounted is the
	// one that killed it; the entries after it are written again, in a new
	// round with a new consumer, so every entry gets a verdict.
	hostile := func(ser broker.Serializer) {
		scenario := "hostile-" + strings.ToLower(ser.Name())
		itIf(tg.Processes && tg.Hostile != nil, scenario+": valid messages are processed once, bad entries dead-lettered, the consumer survives", func() {
			// Every entry is written before the consumer could fall behind, and
			// none should wait for a redelivery: a consumer that handles nothing
			// for stallTime is stuck.
			stallTime := max(4*time.Second, tg.ClaimTime+2*time.Second)
			dlq := uniq("fault.hostile.DLQ")
			dead := &deadRecorder{}
			s.h.node([]any{&Service{Name: "dlq", Channels: channels.Channels{dlq: channels.On(dead.handle)}}}, channels.WithSerializer(ser))
			snd := s.h.sender(channels.WithSerializer(ser))
			deadFor := func(ch, id string) []*broker.Message {
				var out []*broker.Message
				for _, m := range dead.all() {
					if m.Headers["x-original-channel"] == ch && m.Headers["x-original-id"] == id {
						out = append(out, m)
					}
				}
				return out
			}

			var t tally
			var lines, problems, killers, deaths, unsupported []string
			hostileIDs := map[string]bool{} // channel|id of every hostile entry written
			dropped, verdicts := 0, 0
			pending := hostileCases(ser)
			for round := 1; len(pending) > 0; round++ {
				ch, group := uniq("fault.hostile"), uniq("fault-hostile")
				c := startFaultChild(tg, fmt.Sprintf("consumer-%d", round), childConfig{Channel: ch, Group: group, MaxInFlight: 1,
					Serializer: ser.Name(), DeadLetter: dlq, MemoryLimit: true})
				c.waitReady()
				seq := 0
				sendValid := func(n int) {
					for range n {
						Expect(snd.SendToChannel(ctx, ch, faultPayload{Seq: seq})).To(Succeed())
						seq++
					}
				}
				caseOf := map[string]hostileCase{}
				var order []string
				sendValid(10)
				for _, hc := range pending {
					id, err := tg.Hostile(ctx, ch, hc.entry)
					if errors.Is(err, errors.ErrUnsupported) {
						unsupported = append(unsupported, hc.name)
						continue
					}
					Expect(err).NotTo(HaveOccurred(), hc.name)
					caseOf[id] = hc
					order = append(order, id)
					hostileIDs[ch+"|"+id] = true
					sendValid(5)
				}
				sendValid(10)
				valid := make([]int, seq)
				for i := range valid {
					valid[i] = i
				}
				ran := func() map[string]int {
					n := map[string]int{}
					for _, r := range c.all() {
						n[r.id]++
					}
					return n
				}
				accounted := func() bool {
					if count(valid, c.all(), nil).lost > 0 {
						return false
					}
					r := ran()
					for _, id := range order {
						if r[id]+len(deadFor(ch, id)) == 0 {
							return false
						}
					}
					return true
				}
				progress := func() int { return c.count() + dead.count() }
				settle(func() bool { return c.dead() || accounted() }, progress, stallTime, 40*time.Second)
				if !c.dead() {
					quietFor(progress, 2*tg.ClaimTime+500*time.Millisecond, 20*time.Second)
				}

				rt := count(valid, c.all(), nil)
				t.sent += rt.sent
				t.processed += rt.processed
				t.duplicates += rt.duplicates
				t.lost += rt.lost
				r := ran()
				// A consumer alive but with valid messages left unprocessed made
				// no progress for the settle time: stalled by the entry before them.
				stalled := !c.dead() && rt.lost > 0
				broken := c.dead() || stalled
				var next []hostileCase
				killer := ""
				for _, id := range order {
					hc := caseOf[id]
					dl := deadFor(ch, id)
					var what string
					switch {
					case broken && killer == "" && r[id]+len(dl) == 0:
						killer = hc.name
						if c.dead() {
							what = "KILLED THE CONSUMER: " + c.death()
						} else {
							what = fmt.Sprintf("STALLED THE CONSUMER: no progress for %s, the valid messages after it not processed", stallTime)
						}
						if i := strings.Index(what, "\n"); i > 0 {
							what = what[:i]
						}
					case broken && killer != "" && r[id]+len(dl) == 0:
						next = append(next, hc) // not reached: next round
						continue
					case r[id]+len(dl) > 1:
						what = fmt.Sprintf("handled %d times (ran %d, dead-lettered %d)", r[id]+len(dl), r[id], len(dl))
						problems = append(problems, hc.name+": "+what)
					case len(dl) == 1:
						t.deadLettered++
						m := dl[0]
						what = fmt.Sprintf("dead-lettered (%s: %s)", m.Headers["x-error-name"], m.Headers["x-error-message"])
						if m.Headers["x-error-name"] == "" || m.Headers["x-error-message"] == "" {
							problems = append(problems, hc.name+": dead letter without x-error-name or x-error-message")
						}
					case r[id] == 1:
						t.processed++
						what = "processed"
						switch {
						case hc.mayProcess:
						case hc.leadingMsgPackValue && ser.Name() == "MsgPack":
							what += " (MsgPack decodes the complete value in its first byte and ignores the trailing bytes)"
						default:
							problems = append(problems, hc.name+": a bad entry reached the handler")
						}
					default:
						dropped++
						what = "dropped (neither run nor dead-lettered)"
					}
					t.sent++
					verdicts++
					lines = append(lines, fmt.Sprintf("  %-36s %s", hc.name, what))
				}
				switch {
				case c.dead():
					if killer == "" {
						killer = "(no hostile entry pending)"
					}
					killers = append(killers, killer)
					deaths = append(deaths, fmt.Sprintf("round %d: died at %s: %s", round, killer, c.death()))
				case stalled && killer != "":
					killers = append(killers, killer+" (stalled)")
					deaths = append(deaths, fmt.Sprintf("round %d: stalled at %s", round, killer))
					c.killNow()
				}
				pending = next
			}
			for _, m := range dead.all() {
				if !hostileIDs[m.Headers["x-original-channel"]+"|"+m.Headers["x-original-id"]] {
					problems = append(problems, "a valid message was dead-lettered: "+m.Headers["x-error-message"])
				}
			}
			details := fmt.Sprintf("hostile=%d dropped=%d", verdicts, dropped)
			if len(unsupported) > 0 {
				details += " unsupported=" + strings.Join(unsupported, ",")
			}
			if len(killers) > 0 {
				details += fmt.Sprintf(" CONSUMER DIED OR STALLED %d times, at: %s", len(killers), strings.Join(killers, ", "))
			}
			t.print(scenario, tg.Name, details)
			for _, l := range lines {
				report("%s", l)
			}
			Expect(deaths).To(BeEmpty(), "the consumer child (address-space budget %d MiB above its start, heap limit %d MiB) died or stalled",
				childAddressBudget>>20, childHeapLimit>>20)
			Expect(problems).To(BeEmpty())
			Expect(t.lost).To(BeZero(), "valid messages not processed")
			Expect(t.duplicates).To(BeZero())
		})
	}
	hostile(broker.JSON{})
	hostile(broker.MsgPack{})
}
