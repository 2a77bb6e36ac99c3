package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/microchannels/channels/broker"
)

// span is a partition's range of offsets [first, end).
type span struct {
	partition  int
	first, end int64
}

// spans reads the range of every partition of topic; false when the topic
// does not exist.
func (a *Adapter) spans(ctx context.Context, c *conn, topic string) ([]span, bool, error) {
	octx, cancel := opCtx(ctx)
	defer cancel()
	ids, err := a.partitions(octx, c, topic, false)
	if errors.Is(err, kafkago.UnknownTopicOrPartition) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	firsts := make([]kafkago.OffsetRequest, len(ids))
	lasts := make([]kafkago.OffsetRequest, len(ids))
	for i, id := range ids {
		firsts[i], lasts[i] = kafkago.FirstOffsetOf(id), kafkago.LastOffsetOf(id)
	}
	fo, err := listOffsets(octx, c, topic, firsts)
	if err != nil {
		return nil, true, err
	}
	lo, err := listOffsets(octx, c, topic, lasts)
	if err != nil {
		return nil, true, err
	}
	byID := map[int]*span{}
	out := make([]span, len(ids))
	for i, id := range ids {
		out[i] = span{partition: id}
		byID[id] = &out[i]
	}
	for _, p := range fo {
		if s := byID[p.Partition]; s != nil {
			s.first = p.FirstOffset
		}
	}
	for _, p := range lo {
		if s := byID[p.Partition]; s != nil {
			s.end = p.LastOffset
		}
	}
	return out, true, nil
}

// storedID is the ID of a dead letter: "partition/offset".
func storedID(partition int, offset int64) string {
	return strconv.Itoa(partition) + "/" + strconv.FormatInt(offset, 10)
}

// parseStoredID reads "partition/offset".
func parseStoredID(id string) (int, int64, bool) {
	ps, os, ok := strings.Cut(id, "/")
	if !ok {
		return 0, 0, false
	}
	p, err1 := strconv.Atoi(ps)
	o, err2 := strconv.ParseInt(os, 10, 64)
	return p, o, err1 == nil && err2 == nil && p >= 0 && o >= 0
}

// toolRecord is one record read by a tooling fetch.
type toolRecord struct {
	partition int
	offset    int64
	time      time.Time
	key       []byte
	value     []byte
	null      bool // the value is null (a tombstone)
	headers   []kafkago.Header
}

// cursor reads a partition's records in [next, end), one fetch at a time.
type cursor struct {
	topic string
	span
	next int64
	buf  []toolRecord
	done bool
}

// head returns the cursor's next record, fetching when its buffer is
// empty; nil at the end of its range.
func (k *cursor) head(ctx context.Context, c *conn) (*toolRecord, error) {
	for len(k.buf) == 0 && !k.done {
		if k.next >= k.end {
			k.done = true
			break
		}
		recs, next, err := fetchRecords(ctx, c, k.topic, k.partition, k.next, k.end, 0)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 && next == k.next {
			// Nothing readable left below the end (a gap: compacted or
			// aborted records).
			k.done = true
			break
		}
		k.buf, k.next = recs, next
	}
	if len(k.buf) == 0 {
		return nil, nil
	}
	return &k.buf[0], nil
}

func (k *cursor) pop() { k.buf = k.buf[1:] }

// fetchRecords fetches the records of partition from offset on, below end
// (end < 0: no bound), waiting up to wait for one (0: the broker's answer
// at once). It returns the offset to fetch next. An offset below the log
// start (removed by retention meanwhile) moves to the log start.
func fetchRecords(ctx context.Context, c *conn, topic string, partition int, from, end int64, wait time.Duration) ([]toolRecord, int64, error) {
	var res *kafkago.FetchResponse
	err := untilSettled(ctx, func() error {
		var err error
		res, err = c.client.Fetch(ctx, &kafkago.FetchRequest{Topic: topic, Partition: partition, Offset: from,
			MinBytes: 1, MaxBytes: toolFetchBytes, MaxWait: max(wait, time.Millisecond)})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		return err
	})
	if errors.Is(err, kafkago.OffsetOutOfRange) {
		// Retention removed records meanwhile: go on from the log start.
		octx, cancel := opCtx(ctx)
		defer cancel()
		offs, lerr := listOffsets(octx, c, topic, []kafkago.OffsetRequest{kafkago.FirstOffsetOf(partition)})
		if lerr != nil {
			return nil, from, lerr
		}
		for _, p := range offs {
			if p.Partition == partition && p.FirstOffset > from {
				return nil, p.FirstOffset, nil
			}
		}
		return nil, from, nil
	}
	if err != nil {
		return nil, from, fmt.Errorf("channels/kafka: reading partition %d of %q: %w", partition, topic, err)
	}
	next := from
	var out []toolRecord
	for {
		r, err := res.Records.ReadRecord()
		if err != nil {
			break // io.EOF, or a truncated last batch: read again from next
		}
		if r.Offset < from {
			continue
		}
		if end >= 0 && r.Offset >= end {
			break
		}
		rec := toolRecord{partition: partition, offset: r.Offset, time: r.Time, headers: r.Headers, null: r.Value == nil}
		if r.Key != nil {
			if rec.key, err = kafkago.ReadAll(r.Key); err != nil {
				break
			}
		}
		if r.Value != nil {
			if rec.value, err = kafkago.ReadAll(r.Value); err != nil {
				break
			}
		}
		out = append(out, rec)
		next = r.Offset + 1
	}
	return out, next, nil
}

// boundedHeaders reads a toolRecord's headers as the consumers do; a toolRecord
// over the consumers' bounds is listed with the headers that fit them and
// HeaderHeadersCut.
func boundedHeaders(hs []kafkago.Header) map[string]string {
	h, err := fromKafkaHeaders(hs)
	if err == nil {
		return h
	}
	out := map[string]string{}
	size, cut := 0, 0
	for _, x := range hs {
		if _, dup := out[x.Key]; dup {
			continue
		}
		if len(out) >= broker.MaxHeaders-1 || size+len(x.Key)+len(x.Value) > broker.MaxHeadersSize-64 {
			cut++
			continue
		}
		out[x.Key] = string(x.Value)
		size += len(x.Key) + len(x.Value)
	}
	out[HeaderHeadersCut] = strconv.Itoa(cut) + " of " + strconv.Itoa(len(hs)) + " headers left out"
	return out
}

func (r *toolRecord) stored(topic string) *broker.StoredMessage {
	return &broker.StoredMessage{ID: storedID(r.partition, r.offset), Channel: topic, Payload: r.value,
		Headers: boundedHeaders(r.headers), Key: r.key, Time: r.time}
}
