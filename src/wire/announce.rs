//! The announce app data of a group's `meshchat.group` destination: the JSON object MeshChat's
//! group-chat prototype announces (`group_type`, `public_display_name`, `members_count`), with our
//! stamp costs, API version and `lxmf.delivery` hash as extra keys. The protobuf `GroupAnnounce`
//! that earlier servers announced is still read.

use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::domain::Visibility;
use crate::wire::proto as pb;

/// The link API version this server speaks, announced and answered in `info`.
pub const API_VERSION: u32 = 1;

/// Why announce app data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("announce JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("announce protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("announce group_type {0:?} is neither public nor private")]
    GroupType(String),
    #[error("announce lxmf_destination is not 16 bytes")]
    LxmfDestination,
}

/// The JSON form. The prototype's keys come first and are required; ours default, so that a
/// prototype server's announce reads as a group of API version 0 (the JSON dialect only).
#[derive(Debug, Serialize, Deserialize)]
struct AnnounceJson {
    group_type: String,
    public_display_name: String,
    members_count: u64,
    #[serde(default)]
    join_stamp_cost: u32,
    #[serde(default)]
    post_stamp_cost: u32,
    #[serde(default)]
    api_version: u32,
    /// Hex.
    #[serde(default)]
    lxmf_destination: String,
}

/// The announce app_data of a group's `meshchat.group` destination.
pub fn group_announce(name: &str, visibility: Visibility, member_count: u64, join_cost: u32, post_cost: u32, lxmf_hash: &[u8]) -> Vec<u8> {
    encode(&AnnounceJson {
        group_type: visibility.as_str().to_owned(),
        public_display_name: name.to_owned(),
        members_count: member_count,
        join_stamp_cost: join_cost,
        post_stamp_cost: post_cost,
        api_version: API_VERSION,
        lxmf_destination: hex::encode(lxmf_hash),
    })
}

fn encode(a: &AnnounceJson) -> Vec<u8> {
    // A struct of strings and integers always serialises; an empty announce is the safe fallback.
    serde_json::to_vec(a).unwrap_or_default()
}

/// `group_announce` app data with other stamp costs (the adaptive raise), the rest unchanged.
pub fn group_announce_with_costs(app_data: &[u8], join_cost: u32, post_cost: u32) -> Vec<u8> {
    match serde_json::from_slice::<AnnounceJson>(app_data) {
        Ok(a) => encode(&AnnounceJson { join_stamp_cost: join_cost, post_stamp_cost: post_cost, ..a }),
        Err(_) => app_data.to_vec(),
    }
}

/// Reads a group announce's app data, JSON or the older protobuf (as clients do, and as the fuzz
/// target does).
pub fn decode_group_announce(app_data: &[u8]) -> Result<pb::GroupAnnounce, AnnounceError> {
    if app_data.first() != Some(&b'{') {
        // A protobuf GroupAnnounce never starts with `{` (field 15 as a deprecated group).
        let a = pb::GroupAnnounce::decode(app_data)?;
        if !matches!(a.lxmf_destination.len(), 0 | 16) {
            return Err(AnnounceError::LxmfDestination);
        }
        return Ok(a);
    }
    let a: AnnounceJson = serde_json::from_slice(app_data)?;
    let visibility = match Visibility::parse(&a.group_type).ok_or(AnnounceError::GroupType(a.group_type))? {
        Visibility::Public => pb::Visibility::Public,
        Visibility::Private => pb::Visibility::Private,
    };
    let lxmf_destination = match a.lxmf_destination.as_str() {
        "" => Vec::new(),
        h => hex::decode(h).ok().filter(|d| d.len() == 16).ok_or(AnnounceError::LxmfDestination)?,
    };
    Ok(pb::GroupAnnounce {
        name: a.public_display_name,
        visibility: visibility as i32,
        member_count: a.members_count.min(u64::from(u32::MAX)) as u32,
        join_stamp_cost: a.join_stamp_cost,
        post_stamp_cost: a.post_stamp_cost,
        api_version: a.api_version,
        lxmf_destination,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_announce_round_trips() {
        let data = group_announce("Mesh Friends", Visibility::Private, 7, 8, 0, &[5; 16]);
        let a = decode_group_announce(&data).expect("decodes");
        assert_eq!((a.name.as_str(), a.visibility, a.member_count, a.join_stamp_cost), ("Mesh Friends", pb::Visibility::Private as i32, 7, 8));
        assert_eq!((a.api_version, a.lxmf_destination), (API_VERSION, vec![5; 16]));
    }

    #[test]
    fn the_prototypes_keys_come_first_as_it_writes_them() {
        let data = group_announce("Mesh Friends", Visibility::Public, 3, 0, 0, &[1; 16]);
        let text = String::from_utf8(data).expect("utf-8");
        assert!(text.starts_with(r#"{"group_type":"public","public_display_name":"Mesh Friends","members_count":3,"#), "{text}");
    }

    #[test]
    fn a_prototype_servers_announce_reads_as_api_version_0() {
        let a = decode_group_announce(br#"{"group_type": "public", "public_display_name": "MeshChat Public Chat", "members_count": 4}"#).expect("decodes");
        assert_eq!((a.name.as_str(), a.member_count, a.api_version, a.lxmf_destination.len()), ("MeshChat Public Chat", 4, 0, 0));
    }

    #[test]
    fn an_older_protobuf_announce_still_reads() {
        let old = pb::GroupAnnounce { name: "old".into(), member_count: 2, api_version: 1, ..Default::default() }.encode_to_vec();
        let a = decode_group_announce(&old).expect("decodes");
        assert_eq!((a.name.as_str(), a.member_count), ("old", 2));
    }

    #[test]
    fn bad_announces_are_errors() {
        assert!(decode_group_announce(br#"{"group_type": "secret", "public_display_name": "x", "members_count": 1}"#).is_err());
        assert!(decode_group_announce(br#"{"group_type": "public", "public_display_name": "x", "members_count": 1, "lxmf_destination": "ab"}"#).is_err());
        assert!(decode_group_announce(b"{not json").is_err());
        let short = pb::GroupAnnounce { lxmf_destination: vec![1; 3], ..Default::default() }.encode_to_vec();
        assert!(decode_group_announce(&short).is_err(), "a protobuf lxmf_destination must be 16 bytes too");
    }

    #[test]
    fn announce_costs_can_be_replaced() {
        let ad = group_announce("n", Visibility::Public, 3, 8, 6, &[1; 16]);
        let raised = decode_group_announce(&group_announce_with_costs(&ad, 10, 9)).expect("decodes");
        assert_eq!((raised.name.as_str(), raised.member_count, raised.join_stamp_cost, raised.post_stamp_cost), ("n", 3, 10, 9));
    }
}
