//! Providers that send with their own return path (SES, Postmark, ...) report bounces and complaints
//! to a webhook instead: their notifications, read into findings about the message they name by its
//! `Message-ID`.

use serde_json::Value;

use super::Finding;

/// A notification read: the `Message-ID` of the message, and what happened to its recipients. `None`
/// for a notification that carries nothing to record (a delivery, say).
pub type Notification = Option<(String, Vec<Finding>)>;

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// An SES notification (the `Message` of an SNS notification, or an SES event): `Bounce` or
/// `Complaint` with their recipients, the message named by its `Message-ID` header.
pub fn ses(notification: &Value) -> Result<Notification, String> {
    let kind = text(notification, "notificationType")
        .or_else(|| text(notification, "eventType"))
        .ok_or("neither notificationType nor eventType")?;
    let mail = notification.get("mail").ok_or("no mail")?;
    let message_id = mail
        .get("commonHeaders")
        .and_then(|headers| text(headers, "messageId"))
        .or_else(|| {
            mail.get("headers")?.as_array()?.iter().find_map(|header| {
                text(header, "name")
                    .filter(|name| name.eq_ignore_ascii_case("message-id"))
                    .and_then(|_| text(header, "value"))
            })
        })
        .ok_or("the mail has no Message-ID header (include the original headers in SES's notifications)")?;
    let findings = match kind.as_str() {
        "Bounce" => {
            let bounce = notification.get("bounce").ok_or("no bounce")?;
            let permanent = text(bounce, "bounceType").as_deref() == Some("Permanent");
            bounce
                .get("bouncedRecipients")
                .and_then(Value::as_array)
                .ok_or("no bouncedRecipients")?
                .iter()
                .map(|recipient| Finding::Bounce {
                    recipient: text(recipient, "emailAddress"),
                    status: text(recipient, "status"),
                    diagnostic: text(recipient, "diagnosticCode")
                        .or_else(|| text(bounce, "bounceSubType")),
                    hard: permanent,
                })
                .collect()
        }
        "Complaint" => {
            let complaint = notification.get("complaint").ok_or("no complaint")?;
            let kind = text(complaint, "complaintFeedbackType").unwrap_or_else(|| "abuse".into());
            complaint
                .get("complainedRecipients")
                .and_then(Value::as_array)
                .ok_or("no complainedRecipients")?
                .iter()
                .map(|recipient| Finding::Complaint {
                    recipient: text(recipient, "emailAddress"),
                    kind: kind.clone(),
                })
                .collect()
        }
        _ => return Ok(None),
    };
    Ok(Some((message_id, findings)))
}

/// A Postmark webhook: a `Bounce` (hard or soft by its `Type`) or a `SpamComplaint`, naming the
/// message by its `MessageID`.
pub fn postmark(payload: &Value) -> Result<Notification, String> {
    let record = text(payload, "RecordType").ok_or("no RecordType")?;
    let message_id = text(payload, "MessageID").ok_or("no MessageID")?;
    let recipient = text(payload, "Email");
    let findings = match record.as_str() {
        "Bounce" => {
            let kind = text(payload, "Type").unwrap_or_default();
            let hard = matches!(
                kind.as_str(),
                "HardBounce" | "BadEmailAddress" | "ManuallyDeactivated" | "AddressChange"
            );
            let diagnostic = text(payload, "Details").or_else(|| text(payload, "Description"));
            if matches!(kind.as_str(), "SoftBounce" | "Transient" | "DnsError") {
                vec![Finding::Delay {
                    recipient,
                    status: None,
                    diagnostic,
                }]
            } else {
                vec![Finding::Bounce {
                    recipient,
                    status: None,
                    diagnostic,
                    hard,
                }]
            }
        }
        "SpamComplaint" => vec![Finding::Complaint {
            recipient,
            kind: "abuse".into(),
        }],
        _ => return Ok(None),
    };
    Ok(Some((message_id, findings)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_ses_bounces_and_complaints() {
        let bounce = json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                       "bouncedRecipients": [{"emailAddress": "ann@example.org", "status": "5.1.1",
                                              "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
            "mail": {"messageId": "ses-id", "commonHeaders": {"messageId": "<abc@example.com>"}}
        });
        let (id, findings) = ses(&bounce).unwrap().unwrap();
        assert_eq!(id, "<abc@example.com>");
        assert!(
            matches!(&findings[0], Finding::Bounce { hard: true, status: Some(s), .. } if s == "5.1.1")
        );
        let complaint = json!({
            "eventType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": "bob@example.org"}],
                          "complaintFeedbackType": "abuse"},
            "mail": {"headers": [{"name": "Message-ID", "value": "<def@example.com>"}]}
        });
        let (id, findings) = ses(&complaint).unwrap().unwrap();
        assert_eq!(id, "<def@example.com>");
        assert_eq!(
            findings,
            [Finding::Complaint {
                recipient: Some("bob@example.org".into()),
                kind: "abuse".into()
            }]
        );
        let delivery = json!({"notificationType": "Delivery", "mail": {"commonHeaders": {"messageId": "<x>"}}});
        assert_eq!(ses(&delivery).unwrap(), None);
        assert!(ses(&json!({"notificationType": "Bounce", "mail": {}})).is_err());
    }

    #[test]
    fn reads_postmark_bounces() {
        let hard = json!({"RecordType": "Bounce", "Type": "HardBounce", "MessageID": "<a@x>",
                          "Email": "ann@example.org", "Details": "smtp;550 5.1.1 unknown"});
        let (_, findings) = postmark(&hard).unwrap().unwrap();
        assert!(matches!(findings[0], Finding::Bounce { hard: true, .. }));
        let soft = json!({"RecordType": "Bounce", "Type": "SoftBounce", "MessageID": "<a@x>",
                          "Email": "ann@example.org"});
        assert!(matches!(
            postmark(&soft).unwrap().unwrap().1[0],
            Finding::Delay { .. }
        ));
        let spam = json!({"RecordType": "SpamComplaint", "MessageID": "<a@x>", "Email": "c@x.org"});
        assert!(matches!(
            postmark(&spam).unwrap().unwrap().1[0],
            Finding::Complaint { .. }
        ));
        assert_eq!(
            postmark(&json!({"RecordType": "Open", "MessageID": "<a@x>"})).unwrap(),
            None
        );
    }
}
