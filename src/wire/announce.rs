//! The announce app data of a group's `meshchat.group` destination (a protobuf `GroupAnnounce`).

use prost::Message as _;

use crate::domain::Visibility;
use crate::wire::proto as pb;

/// The link API version this server speaks, announced and answered in `info`.
pub const API_VERSION: u32 = 1;

/// The announce app_data of a group's `meshchat.group` destination.
pub fn group_announce(name: &str, visibility: Visibility, member_count: u64, join_cost: u32, post_cost: u32, lxmf_hash: &[u8]) -> Vec<u8> {
    pb::GroupAnnounce {
        name: name.to_owned(),
        visibility: match visibility {
            Visibility::Public => pb::Visibility::Public,
            Visibility::Private => pb::Visibility::Private,
        } as i32,
        member_count: member_count.min(u64::from(u32::MAX)) as u32,
        join_stamp_cost: join_cost,
        post_stamp_cost: post_cost,
        api_version: API_VERSION,
        lxmf_destination: lxmf_hash.to_vec(),
    }
    .encode_to_vec()
}

/// `group_announce` app data with other stamp costs (the adaptive raise), the rest unchanged.
pub fn group_announce_with_costs(app_data: &[u8], join_cost: u32, post_cost: u32) -> Vec<u8> {
    match pb::GroupAnnounce::decode(app_data) {
        Ok(ad) => pb::GroupAnnounce { join_stamp_cost: join_cost, post_stamp_cost: post_cost, ..ad }.encode_to_vec(),
        Err(_) => app_data.to_vec(),
    }
}

/// Reads a group announce's app data (as clients do, and as the fuzz target does).
pub fn decode_group_announce(app_data: &[u8]) -> Result<pb::GroupAnnounce, prost::DecodeError> {
    pb::GroupAnnounce::decode(app_data)
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
    fn announce_costs_can_be_replaced() {
        let ad = group_announce("n", Visibility::Public, 3, 8, 6, &[1; 16]);
        let raised = decode_group_announce(&group_announce_with_costs(&ad, 10, 9)).expect("decodes");
        assert_eq!((raised.name.as_str(), raised.member_count, raised.join_stamp_cost, raised.post_stamp_cost), ("n", 3, 10, 9));
    }
}
