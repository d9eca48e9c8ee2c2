package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/keywarden/keywarden/internal/incident"
)

// memStore is an in-memory incident store with dynamostore's contract as the handler and the
// announcer see it: conditional updates on the version, refusals kept beside the head without
// a new version (one per entry ID, counted, even for an unknown incident), Slack bookkeeping
// without a new version. It lets
// the handler's decisions be tested in milliseconds; the rig runs the same tests on the real
// store on moto.
type memStore struct {
	mu        sync.Mutex
	incidents map[string]incident.Incident
	refusals  map[string][]incident.Entry
	claims    map[string]bool
	// updates counts the writes of an incident's head (Update and UpdateAt that wrote).
	updates int
}

func newMemStore() *memStore {
	return &memStore{incidents: map[string]incident.Incident{}, refusals: map[string][]incident.Entry{}, claims: map[string]bool{}}
}

// clone deep-copies an incident through its JSON form, the contract the store keeps.
func clone(inc incident.Incident) incident.Incident {
	b, err := json.Marshal(inc)
	if err != nil {
		panic(err)
	}
	var c incident.Incident
	if err := json.Unmarshal(b, &c); err != nil {
		panic(err)
	}
	return c
}

func (m *memStore) Open(_ context.Context, inc incident.Incident, delivery incident.Entry, fold func(*incident.Incident)) (incident.Incident, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inc.ID == "" {
		inc.ID = incident.NewID(time.Now())
	}
	inc.State, inc.Version = incident.StateOpen, 1
	inc.RecordDelivery(delivery)
	if fold != nil {
		fold(&inc)
	}
	inc.Count()
	m.incidents[inc.ID] = clone(inc)
	return clone(inc), true, nil
}

func (m *memStore) Get(_ context.Context, id string) (incident.Incident, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	inc, ok := m.incidents[id]
	if !ok {
		return incident.Incident{}, fmt.Errorf("get incident %s: %w", id, incident.ErrNotFound)
	}
	c := clone(inc)
	c.Timeline = append(c.Timeline, m.refusals[id]...)
	incident.SortTimeline(c.Timeline)
	c.SettleSlackDelivery()
	return c, nil
}

func (m *memStore) Update(ctx context.Context, id string, mutate func(*incident.Incident) error) (incident.Incident, error) {
	return m.update(id, -1, mutate)
}

func (m *memStore) UpdateAt(ctx context.Context, id string, version int64, mutate func(*incident.Incident) error) (incident.Incident, error) {
	return m.update(id, version, mutate)
}

func (m *memStore) update(id string, version int64, mutate func(*incident.Incident) error) (incident.Incident, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.incidents[id]
	switch {
	case !ok:
		return incident.Incident{}, fmt.Errorf("update incident %s: %w", id, incident.ErrNotFound)
	case version >= 0 && cur.Version != version:
		return incident.Incident{}, fmt.Errorf("update incident %s at version %d (now %d): %w", id, version, cur.Version, incident.ErrStale)
	}
	next := clone(cur)
	if err := mutate(&next); err != nil {
		return incident.Incident{}, err
	}
	next.Version++
	next.Count()
	m.incidents[id] = clone(next)
	m.updates++
	return next, nil
}

func (m *memStore) RecordRefusal(_ context.Context, id string, e incident.Entry) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Like the real store, a refusal for an incident not (yet) there is kept all the same.
	for i, r := range m.refusals[id] {
		if r.ID == e.ID {
			m.refusals[id][i].Count++
			return false, nil
		}
	}
	m.refusals[id] = append(m.refusals[id], e)
	return true, nil
}

func (m *memStore) Claim(_ context.Context, name string, _ time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.claims[name] {
		return false, nil
	}
	m.claims[name] = true
	return true, nil
}

func (m *memStore) SetSlack(_ context.Context, id string, ref incident.SlackRef, postedSeq int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	inc, ok := m.incidents[id]
	if !ok {
		return fmt.Errorf("set slack of incident %s: %w", id, incident.ErrNotFound)
	}
	inc.Slack = &ref
	inc.SlackPosted = max(inc.SlackPosted, postedSeq)
	m.incidents[id] = inc
	return nil
}

func (m *memStore) ListActive(_ context.Context) ([]incident.Incident, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []incident.Incident
	for _, inc := range m.incidents {
		if !inc.State.Closed() {
			out = append(out, clone(inc))
		}
	}
	return out, nil
}

func (m *memStore) Release(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.claims, name)
	return nil
}

// RecordSlackDelivery keeps the shown version and the failure reason, as dynamostore's slack
// item does, without a new version.
func (m *memStore) RecordSlackDelivery(_ context.Context, id string, shown int64, failure string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	inc, ok := m.incidents[id]
	if !ok {
		return fmt.Errorf("record slack delivery of incident %s: %w", id, incident.ErrNotFound)
	}
	inc.SlackShown = max(inc.SlackShown, shown)
	inc.SlackDelivery.Reason = failure
	inc.SettleSlackDelivery()
	m.incidents[id] = inc
	return nil
}
