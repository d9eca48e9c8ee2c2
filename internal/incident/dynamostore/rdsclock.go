package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The RDS event clock: one item per event source (an instance or cluster identifier) holding
// the Date of the latest RDS key-access event applied for it. It lives beside the incidents,
// not in them, because the event that makes an older one stale (RDS-EVENT-0420) may arrive when
// no incident is open. Added by issue 9; it changes no existing item.
const (
	kindRDSClock = "rds-clock"
	skRDSClock   = "clock"
	attrAtNanos  = "at_nanos"
	attrCode     = "code"
)

func rdsClockPK(source string) string { return "rds#" + source }

// AdvanceRDSClock records that an RDS event code dated at was applied for source, unless an
// event with a later Date was already applied for it: then applied is false and latestCode and
// latestAt name that event. An event with the same Date as the latest is applied (a redelivery,
// or two events RDS dated alike; their effects are idempotent). The UpdateItem's condition
// compares the dates in DynamoDB, so two concurrent deliveries cannot both win out of order
// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html).
// Errors: DynamoDB's, wrapped.
func (s *Store) AdvanceRDSClock(ctx context.Context, source, code string, at time.Time) (applied bool, latestCode string, latestAt time.Time, err error) {
	_, err = s.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      key(rdsClockPK(source), skRDSClock),
		UpdateExpression:         aws.String("SET #kind = :kind, #at = :at, #code = :code"),
		ConditionExpression:      aws.String("attribute_not_exists(#at) OR #at <= :at"),
		ExpressionAttributeNames: map[string]string{"#kind": attrKind, "#at": attrAtNanos, "#code": attrCode},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":kind": str(kindRDSClock), ":at": num(at.UTC().UnixNano()), ":code": str(code),
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		if err != nil {
			return false, "", time.Time{}, fmt.Errorf("advance rds clock of %s: %w", source, err)
		}
		return true, code, at.UTC(), nil
	}
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: key(rdsClockPK(source), skRDSClock), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return false, "", time.Time{}, fmt.Errorf("read rds clock of %s: %w", source, err)
	}
	n, err := numAttr(out.Item, attrAtNanos)
	if err != nil {
		return false, "", time.Time{}, fmt.Errorf("read rds clock of %s: %w", source, err)
	}
	return false, stringAttr(out.Item, attrCode), time.Unix(0, n).UTC(), nil
}
