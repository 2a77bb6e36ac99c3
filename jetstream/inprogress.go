package jetstream

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	js "github.com/nats-io/nats.go/jetstream"
)

// inProgressEvery is the in-progress interval for a consumer's AckWait:
// the asked one when set and shorter than AckWait/3, else AckWait/3.
func inProgressEvery(ackWait, asked time.Duration) time.Duration {
	every := max(ackWait/3, 10*time.Millisecond)
	if asked > 0 && asked < every {
		every = asked
	}
	return every
}

// refreshEvery is how often, while messages run, the consumer's
// configuration is read again (besides the reads the consumer's API
// requests and advisories trigger): half its AckWait, at least
// minRefreshEvery.
func refreshEvery(ackWait time.Duration) time.Duration {
	return max(ackWait/2, minRefreshEvery)
}

const minRefreshEvery = 5 * time.Second

// ackWaitOf is the shortest wait for an acknowledgement a consumer
// configuration gives: its AckWait, or a shorter BackOff step (the server
// times the deliveries out by BackOff when it is set).
func ackWaitOf(ackWait time.Duration, backoff []time.Duration) time.Duration {
	for _, b := range backoff {
		if b > 0 && (ackWait <= 0 || b < ackWait) {
			ackWait = b
		}
	}
	return ackWait
}

// rereadAfter are the delays, after a consumer API request is seen, of the
// reads of the consumer's configuration (the server applies the request
// after we see it, later in a cluster).
var rereadAfter = []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}

// requestHold bounds how long an interval lowered from a request's body
// holds against reads that do not show the request applied (a request
// the server refused).
const requestHold = 2 * DefaultOpTimeout

// watch listens for what changes the consumer under this member: the
// consumer API requests of other members (an update may lower AckWait:
// the interval follows the AckWait the request asks for at once, the
// running messages are reported in progress and the configuration is
// read again, rereadAfter), its creation and deletion (its failure
// records start over), and the server's MAX_DELIVERIES advisory (a
// message the server stopped delivering is logged). Where the account's
// permissions forbid these subjects the slow refresh alone applies.
func (s *subscription) watch() {
	durable := DurableName(s.ch.Group)
	on := func(subject string, fn nats.MsgHandler) {
		if w, err := s.c.nc.Subscribe(subject, fn); err == nil {
			s.watches = append(s.watches, w)
		}
	}
	changing := func(m *nats.Msg) {
		s.lowerFromRequest(m.Data)
		s.reportNow()
		go s.refresh()
		for _, d := range rereadAfter {
			time.AfterFunc(d, s.refresh)
		}
	}
	changed := func(*nats.Msg) { go s.refresh() }
	api := "$JS.API.CONSUMER."
	on(api+"CREATE."+s.stream+"."+durable, changing)
	on(api+"CREATE."+s.stream+"."+durable+".>", changing)
	on(api+"DURABLE.CREATE."+s.stream+"."+durable, changing)
	on("$JS.EVENT.ADVISORY.CONSUMER.CREATED."+s.stream+"."+durable, changed)
	on("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+s.stream+"."+durable, s.maxDeliveries)
}

// lowerFromRequest lowers the in-progress interval at once to the one a
// consumer create or update request asks for (its config's ack_wait and
// backoff), when shorter; it holds until a read of the consumer shows it,
// at most requestHold.
func (s *subscription) lowerFromRequest(body []byte) {
	var req struct {
		Config struct {
			AckWait time.Duration   `json:"ack_wait"`
			BackOff []time.Duration `json:"backoff"`
		} `json:"config"`
	}
	if json.Unmarshal(body, &req) != nil {
		return
	}
	wait := ackWaitOf(req.Config.AckWait, req.Config.BackOff)
	if wait <= 0 {
		return
	}
	every := inProgressEvery(wait, s.askedInterval)
	if every >= time.Duration(s.interval.Load()) {
		return
	}
	s.heldUntil.Store(time.Now().Add(requestHold).UnixNano())
	s.heldEvery.Store(int64(every))
	s.interval.Store(int64(every))
	s.log.Debug("channels/jetstream: in-progress interval follows a consumer update request",
		"channel", s.ch.Name, "group", s.ch.Group, "ack_wait", wait, "interval", every)
	s.poke()
}

// maxDeliveries logs the server's advisory of a message it stopped
// delivering (MaxDeliver reached): the message stays in the stream,
// neither handled nor dead-lettered.
func (s *subscription) maxDeliveries(m *nats.Msg) {
	var adv struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries uint64 `json:"deliveries"`
	}
	_ = json.Unmarshal(m.Data, &adv)
	s.log.Error("channels/jetstream: the server stopped delivering a message (the consumer's MaxDeliver): it stays in the stream, neither handled nor dead-lettered",
		"channel", s.ch.Name, "group", s.ch.Group, "stream", s.stream, "stream_seq", adv.StreamSeq, "deliveries", adv.Deliveries)
}

// beatLoop reports the tracked messages in progress when a report is due
// and reads the consumer's configuration again while messages run; it
// sleeps while none is tracked, until a message arrives.
func (s *subscription) beatLoop() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		var due <-chan time.Time
		if wait := s.inProgress(); wait > 0 {
			t.Reset(wait)
			due = t.C
		}
		select {
		case <-due:
		case <-s.wake:
		case <-s.beatQuit:
			t.Stop()
			return
		}
		t.Stop()
	}
}

func (s *subscription) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// inProgress tells the server that the tracked messages are being worked
// on, so a handler longer than AckWait keeps its message, when a report is
// due; it starts a read of the consumer's configuration when one is due.
// It returns the time until the next report or read (0: nothing tracked).
func (s *subscription) inProgress() time.Duration {
	s.runningMu.Lock()
	defer s.runningMu.Unlock()
	if len(s.running) == 0 {
		return 0
	}
	now := time.Now()
	every := time.Duration(s.interval.Load())
	refresh := refreshEvery(s.info.Load().Config.AckWait)
	if now.Sub(s.refreshed) >= refresh {
		s.refreshed = now
		go s.refresh()
	}
	if now.Sub(s.lastReport) >= every {
		s.lastReport = now
		for d := range s.running {
			_ = d.m.InProgress()
		}
	}
	return max(min(s.lastReport.Add(every).Sub(now), s.refreshed.Add(refresh).Sub(now)), time.Millisecond)
}

// reportNow reports every tracked message in progress at once.
func (s *subscription) reportNow() {
	s.runningMu.Lock()
	defer s.runningMu.Unlock()
	if len(s.running) == 0 {
		return
	}
	s.lastReport = time.Now()
	for d := range s.running {
		_ = d.m.InProgress()
	}
}

// refresh reads the consumer's configuration (one read at a time; one
// asked while another runs is made after it).
func (s *subscription) refresh() {
	s.again.Store(true)
	for s.again.Load() && s.refreshing.CompareAndSwap(false, true) {
		s.again.Store(false)
		s.readConsumer()
		s.refreshing.Store(false)
	}
}

// readConsumer reads the consumer and applies what it finds; a read
// applied covers the consumer sequences seen going back before it started
// (appliedGen).
func (s *subscription) readConsumer() {
	gen := s.recreatedGen.Load()
	cons, _, _ := s.consumer()
	ctx, cancel := context.WithTimeout(s.fetchCtx, DefaultOpTimeout)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return
	}
	s.applyInfo(info)
	for {
		if a := s.appliedGen.Load(); a >= gen || s.appliedGen.CompareAndSwap(a, gen) {
			return
		}
	}
}

// applyInfo takes a read of the consumer: the in-progress interval
// follows its AckWait (or a shorter BackOff step; an interval lowered by a
// request holds until a read shows it, or requestHold passed), and a consumer created again (another Created
// time: its sequences start over) gets records of its own; a read older
// than the last one applied does not take them back.
func (s *subscription) applyInfo(info *js.ConsumerInfo) {
	s.info.Store(info)
	s.consMu.Lock()
	if info.Created.After(s.created) {
		s.created = info.Created
		s.recs = newRecords(s.recs.kv, s.stream, DurableName(s.ch.Group), info.Created)
		s.log.Debug("channels/jetstream: the consumer was created again; its failure records start over",
			"channel", s.ch.Name, "group", s.ch.Group, "created", info.Created)
	}
	s.consMu.Unlock()
	every := inProgressEvery(ackWaitOf(info.Config.AckWait, info.Config.BackOff), s.askedInterval)
	if held := time.Duration(s.heldEvery.Load()); held > 0 {
		if every <= held || time.Now().UnixNano() >= s.heldUntil.Load() {
			s.heldEvery.Store(0)
		} else {
			every = held
		}
	}
	if old := time.Duration(s.interval.Swap(int64(every))); old != every {
		s.log.Debug("channels/jetstream: in-progress interval follows the consumer's AckWait",
			"channel", s.ch.Name, "group", s.ch.Group, "ack_wait", info.Config.AckWait, "interval", every)
		s.poke()
	}
}

func (s *subscription) track(d *delivery) {
	s.runningMu.Lock()
	first := len(s.running) == 0
	s.running[d] = struct{}{}
	s.runningMu.Unlock()
	if first {
		s.poke()
	}
}

func (s *subscription) untrack(d *delivery) {
	s.runningMu.Lock()
	delete(s.running, d)
	s.runningMu.Unlock()
}
