package kmskey

import (
	"context"
	"errors"
	"fmt"
	"github.com/aws/smithy-go"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-cmp/cmp"
)

// fakeKMS is a KMSAPI whose methods are function fields; nil fields fail the test if called.
type fakeKMS struct {
	describeKey func(*kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error)
	listKeys    func(*kms.ListKeysInput) (*kms.ListKeysOutput, error)
	listAliases func(*kms.ListAliasesInput) (*kms.ListAliasesOutput, error)
	describes   atomic.Int64
}

func (f *fakeKMS) DescribeKey(_ context.Context, in *kms.DescribeKeyInput, _ ...func(*kms.Options)) (*kms.DescribeKeyOutput, error) {
	f.describes.Add(1)
	return f.describeKey(in)
}

func (f *fakeKMS) ListKeys(_ context.Context, in *kms.ListKeysInput, _ ...func(*kms.Options)) (*kms.ListKeysOutput, error) {
	return f.listKeys(in)
}

func (f *fakeKMS) ListAliases(_ context.Context, in *kms.ListAliasesInput, _ ...func(*kms.Options)) (*kms.ListAliasesOutput, error) {
	return f.listAliases(in)
}

const (
	keyID    = "1234abcd-12ab-34cd-56ef-1234567890ab"
	keyARN   = "arn:aws:kms:us-east-1:123456789012:key/" + keyID
	aliasARN = "arn:aws:kms:us-east-1:123456789012:alias/app"
)

// oneKey answers DescribeKey for keyID in every form, and NotFoundException for anything else.
func oneKey(meta func(*types.KeyMetadata)) func(*kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
	return func(in *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
		switch aws.ToString(in.KeyId) {
		case keyID, keyARN, "alias/app", aliasARN:
			m := &types.KeyMetadata{KeyId: aws.String(keyID), Arn: aws.String(keyARN), KeyState: types.KeyStateEnabled, KeyManager: types.KeyManagerTypeCustomer}
			if meta != nil {
				meta(m)
			}
			return &kms.DescribeKeyOutput{KeyMetadata: m}, nil
		}
		return nil, &types.NotFoundException{Message: aws.String("Key '" + aws.ToString(in.KeyId) + "' does not exist")}
	}
}

func TestResolverARN(t *testing.T) {
	tests := []struct {
		name      string
		ref       string
		want      string
		wantCalls int64
		wantErr   error
	}{
		{name: "key ARN needs no call", ref: keyARN, want: keyARN, wantCalls: 0},
		{name: "key ID", ref: keyID, want: keyARN, wantCalls: 1},
		{name: "alias name", ref: "alias/app", want: keyARN, wantCalls: 1},
		{name: "alias ARN", ref: aliasARN, want: keyARN, wantCalls: 1},
		{name: "missing alias", ref: "alias/gone", wantCalls: 1, wantErr: ErrNotFound},
		{name: "missing key ID", ref: "00000000-0000-0000-0000-000000000000", wantCalls: 1, wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &fakeKMS{describeKey: oneKey(nil)}
			r := NewResolver(api)
			got, err := r.ARN(context.Background(), tt.ref)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ARN(%q) error = %v, want %v", tt.ref, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ARN(%q) = %q, want %q", tt.ref, got, tt.want)
			}
			if n := api.describes.Load(); n != tt.wantCalls {
				t.Errorf("DescribeKey calls = %d, want %d", n, tt.wantCalls)
			}
			if tt.wantErr != nil {
				if !strings.Contains(err.Error(), "describe key "+tt.ref) {
					t.Errorf("error %q does not name the reference", err)
				}
				var nf *types.NotFoundException
				if !errors.As(err, &nf) {
					t.Errorf("error %v does not wrap the KMS NotFoundException", err)
				}
			}
		})
	}
}

func TestResolverCache(t *testing.T) {
	api := &fakeKMS{describeKey: oneKey(nil)}
	r := NewResolver(api)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	ctx := context.Background()

	for range 3 {
		for _, ref := range []string{keyID, "alias/app", aliasARN, keyARN} {
			if got, err := r.ARN(ctx, ref); err != nil || got != keyARN {
				t.Fatalf("ARN(%q) = %q, %v; want %q", ref, got, err, keyARN)
			}
		}
	}
	// One call per non-ARN form, however often asked.
	if n := api.describes.Load(); n != 3 {
		t.Errorf("DescribeKey calls = %d, want 3", n)
	}

	// An alias can be re-pointed, so its answer expires; a key ID's never does.
	now = now.Add(DefaultAliasTTL)
	for _, ref := range []string{keyID, "alias/app"} {
		if _, err := r.ARN(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	if n := api.describes.Load(); n != 4 {
		t.Errorf("DescribeKey calls after alias TTL = %d, want 4", n)
	}

	// Describe is never cached, but it teaches ARN the key ID.
	api2 := &fakeKMS{describeKey: oneKey(nil)}
	r2 := NewResolver(api2)
	for range 2 {
		if _, err := r2.Describe(ctx, keyARN); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r2.ARN(ctx, keyID); err != nil {
		t.Fatal(err)
	}
	if n := api2.describes.Load(); n != 2 {
		t.Errorf("DescribeKey calls = %d, want 2 (Describe twice, ARN from cache)", n)
	}
}

func TestResolverErrorsNotCached(t *testing.T) {
	fail := true
	api := &fakeKMS{describeKey: func(in *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
		if fail {
			return nil, errors.New("throttled")
		}
		return oneKey(nil)(in)
	}}
	r := NewResolver(api)
	if _, err := r.ARN(context.Background(), "alias/app"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("ARN error = %v, want a non-NotFound error", err)
	}
	fail = false
	if got, err := r.ARN(context.Background(), "alias/app"); err != nil || got != keyARN {
		t.Fatalf("ARN after recovery = %q, %v; want %q", got, err, keyARN)
	}
}

func TestResolverConcurrent(t *testing.T) {
	api := &fakeKMS{describeKey: oneKey(nil)}
	r := NewResolver(api)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			ref := []string{keyID, "alias/app", aliasARN}[i%3]
			if got, err := r.ARN(context.Background(), ref); err != nil || got != keyARN {
				t.Errorf("ARN(%q) = %q, %v", ref, got, err)
			}
		})
	}
	wg.Wait()
	// Each alias form needs a call (the key ID may come free with either); concurrent misses
	// may each call, but never more than once per goroutine.
	if n := api.describes.Load(); n < 2 || n > 50 {
		t.Errorf("DescribeKey calls = %d, want 2..50", n)
	}
}

func TestDescribe(t *testing.T) {
	deletion := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		meta func(*types.KeyMetadata)
		want Key
	}{
		{
			name: "enabled customer key",
			want: Key{ARN: keyARN, ID: keyID, State: "Enabled", Manager: "CUSTOMER"},
		},
		{
			name: "pending deletion",
			meta: func(m *types.KeyMetadata) {
				m.KeyState = types.KeyStatePendingDeletion
				m.DeletionDate = aws.Time(deletion)
				m.Origin = types.OriginTypeExternal
			},
			want: Key{ARN: keyARN, ID: keyID, State: "PendingDeletion", Manager: "CUSTOMER", Origin: "EXTERNAL", DeletionDate: &deletion},
		},
		{
			name: "pending replica deletion has no date yet",
			meta: func(m *types.KeyMetadata) {
				m.KeyState = types.KeyStatePendingReplicaDeletion
				m.DeletionDate = aws.Time(deletion)
				m.MultiRegion = aws.Bool(true)
			},
			want: Key{ARN: keyARN, ID: keyID, State: "PendingReplicaDeletion", Manager: "CUSTOMER", MultiRegion: true},
		},
		{
			name: "custom key store, AWS managed",
			meta: func(m *types.KeyMetadata) {
				m.KeyManager = types.KeyManagerTypeAws
				m.CustomKeyStoreId = aws.String("cks-1234567890abcdef0")
				m.Origin = types.OriginTypeAwsCloudhsm
			},
			want: Key{ARN: keyARN, ID: keyID, State: "Enabled", Manager: "AWS", Origin: "AWS_CLOUDHSM", CustomKeyStoreID: "cks-1234567890abcdef0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResolver(&fakeKMS{describeKey: oneKey(tt.meta)})
			got, err := r.Describe(context.Background(), "alias/app")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Describe mismatch (-want +got):\n%s", diff)
			}
			if got.CustomerManaged() != (tt.want.Manager == "CUSTOMER") {
				t.Errorf("CustomerManaged() = %v, want %v", got.CustomerManaged(), !got.CustomerManaged())
			}
		})
	}
}

func TestAlias(t *testing.T) {
	pages := map[string]*kms.ListAliasesOutput{
		"":   {Aliases: []types.AliasListEntry{{AliasName: aws.String("alias/zeta")}}, NextMarker: aws.String("m2"), Truncated: true},
		"m2": {Aliases: []types.AliasListEntry{{AliasName: aws.String("alias/app")}, {AliasName: aws.String("alias/beta")}}},
	}
	api := &fakeKMS{listAliases: func(in *kms.ListAliasesInput) (*kms.ListAliasesOutput, error) {
		if aws.ToString(in.KeyId) != keyARN {
			return &kms.ListAliasesOutput{}, nil
		}
		return pages[aws.ToString(in.Marker)], nil
	}}
	r := NewResolver(api)
	got, err := r.Alias(context.Background(), keyARN)
	if err != nil || got != "alias/app" {
		t.Errorf("Alias = %q, %v; want alias/app", got, err)
	}
	got, err = r.Alias(context.Background(), "arn:aws:kms:us-east-1:123456789012:key/other")
	if err != nil || got != "" {
		t.Errorf("Alias of a key without aliases = %q, %v; want empty", got, err)
	}

	api.listAliases = func(*kms.ListAliasesInput) (*kms.ListAliasesOutput, error) {
		return nil, &types.NotFoundException{Message: aws.String("no such key")}
	}
	if _, err := r.Alias(context.Background(), keyARN); !errors.Is(err, ErrNotFound) {
		t.Errorf("Alias of a missing key: error %v, want ErrNotFound", err)
	}
}

func TestKeysInStore(t *testing.T) {
	arnOf := func(i int) string { return fmt.Sprintf("arn:aws:kms:us-east-1:123456789012:key/k%02d", i) }
	var listCalls atomic.Int64
	api := &fakeKMS{
		listKeys: func(in *kms.ListKeysInput) (*kms.ListKeysOutput, error) {
			listCalls.Add(1)
			// Three pages of ten keys.
			start := 0
			if m := aws.ToString(in.Marker); m != "" {
				fmt.Sscanf(m, "%d", &start)
			}
			out := &kms.ListKeysOutput{}
			for i := start; i < start+10; i++ {
				out.Keys = append(out.Keys, types.KeyListEntry{KeyArn: aws.String(arnOf(i)), KeyId: aws.String(fmt.Sprintf("k%02d", i))})
			}
			if start+10 < 30 {
				out.Truncated, out.NextMarker = true, aws.String(fmt.Sprint(start+10))
			}
			return out, nil
		},
		describeKey: func(in *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
			var i int
			fmt.Sscanf(strings.TrimPrefix(aws.ToString(in.KeyId), arnOf(0)[:len(arnOf(0))-3]), "k%d", &i)
			if i == 7 { // deleted between ListKeys and DescribeKey
				return nil, &types.NotFoundException{Message: aws.String("gone")}
			}
			m := &types.KeyMetadata{Arn: in.KeyId, KeyId: aws.String(fmt.Sprintf("k%02d", i)), KeyState: types.KeyStateEnabled}
			if i%7 == 0 {
				m.CustomKeyStoreId = aws.String("cks-1")
			} else if i%5 == 0 {
				m.CustomKeyStoreId = aws.String("cks-2")
			}
			return &kms.DescribeKeyOutput{KeyMetadata: m}, nil
		},
	}
	keys, err := NewResolver(api).KeysInStore(context.Background(), "cks-1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.ARN)
	}
	want := []string{arnOf(0), arnOf(14), arnOf(21), arnOf(28)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("KeysInStore mismatch (-want +got):\n%s", diff)
	}
	if n := listCalls.Load(); n != 3 {
		t.Errorf("ListKeys calls = %d, want 3", n)
	}

	// One key whose DescribeKey is denied does not hide the others.
	good := api.describeKey
	api.describeKey = func(in *kms.DescribeKeyInput) (*kms.DescribeKeyOutput, error) {
		if aws.ToString(in.KeyId) == arnOf(14) {
			return nil, &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "not allowed"}
		}
		return good(in)
	}
	keys, err = NewResolver(api).KeysInStore(context.Background(), "cks-1")
	var und *UndescribedKeys
	if !errors.As(err, &und) || len(und.Failed) != 1 || !errors.Is(und.Failed[arnOf(14)], ErrDenied) {
		t.Fatalf("KeysInStore with one denied key: error %v, want UndescribedKeys naming %s as denied", err, arnOf(14))
	}
	got = nil
	for _, k := range keys {
		got = append(got, k.ARN)
	}
	if diff := cmp.Diff([]string{arnOf(0), arnOf(21), arnOf(28)}, got); diff != "" {
		t.Errorf("KeysInStore with one denied key (-want +got):\n%s", diff)
	}
}

func TestIDFromARN(t *testing.T) {
	tests := map[string]string{
		keyARN: keyID,
		"arn:aws-cn:kms:cn-north-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab": "mrk-1234abcd12ab34cd56ef1234567890ab",
		keyID:     keyID,
		aliasARN:  aliasARN,
		"alias/x": "alias/x",
		"":        "",
	}
	for in, want := range tests {
		if got := IDFromARN(in); got != want {
			t.Errorf("IDFromARN(%q) = %q, want %q", in, got, want)
		}
	}
}
