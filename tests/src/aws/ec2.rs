//! EC2's API (its own dialect of the Query protocol): `DescribeSubnets` (`SubnetId.N`),
//! `DescribeSecurityGroups` (`GroupId.N`) and `DescribeVpcs` (`VpcId.N`, or the `isDefault`
//! filter), over a fixed inventory that every region has: [`LAB_SUBNETS`] in [`LAB_VPC_ID`],
//! which is also the region's default VPC until `default-vpc-delete`, and the security group
//! [`LAB_SECURITY_GROUP_ID`].
//!
//! As AWS does (tests/FIDELITY.md): an id that does not exist fails the whole call
//! (`InvalidSubnetID.NotFound`, `InvalidGroup.NotFound`, HTTP 400), not just its item; an id
//! of the wrong form is `…Malformed`; errors are EC2's `<Response><Errors>` document; ids and
//! `MaxResults` cannot be combined. `subnet-delete` removes a subnet from every region.
//!
//! Where the lab departs from AWS: `Filter.N` is refused (`InvalidParameterValue`, saying
//! so) rather than evaluated, but for `DescribeVpcs`'s `isDefault`, and there is no paging
//! (the inventory is one page).

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use hyper::body::Bytes;
use serde_json::json;

use super::query::{self, Params};
use super::xml::Xml;
use super::{ACCOUNT_ID, ApiError, AwsService};
use crate::Shared;
use crate::config::{LAB_SECURITY_GROUP_ID, LAB_SECURITY_GROUP_NAME, LAB_SUBNETS, LAB_VPC_ID};
use crate::naming::short_region;

const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
/// The `MaxResults` EC2 accepts for both describes.
const MAX_RESULTS: std::ops::RangeInclusive<i64> = 5..=1000;

/// `POST /` signed for `ec2`.
pub(crate) fn handle(lab: Arc<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (mut call, params, scope) = query::begin(&lab.aws, AwsService::Ec2, &headers, &body);
    call.request = json!({
        "subnet_ids": params.flat_list("SubnetId"),
        "group_ids": params.flat_list("GroupId"),
        "vpc_ids": params.flat_list("VpcId"),
    });
    let outcome = (|| -> Result<String, ApiError> {
        let scope = scope?;
        if call.action.is_empty() {
            return Err(query::missing_action());
        }
        call.gate()?;
        let request_id = call.request_id();
        match call.action.as_str() {
            "DescribeSubnets" => describe_subnets(&lab, &scope.region, &params, request_id),
            "DescribeSecurityGroups" => {
                describe_security_groups(&scope.region, &params, request_id)
            }
            "DescribeVpcs" => describe_vpcs(&lab, &params, request_id),
            _ => Err(query::invalid_action(
                "DescribeSubnets, DescribeSecurityGroups and DescribeVpcs",
            )),
        }
    })();
    call.finish(outcome)
}

/// `<{action}Response xmlns=…><requestId>…</requestId>…`, EC2's answer (no `Result`
/// wrapper, lower-case element names).
fn response(action: &str, request_id: &str, body: impl FnOnce(&mut Xml)) -> String {
    Xml::with_declaration().root(&format!("{action}Response"), NAMESPACE, |x| {
        x.text("requestId", request_id);
        body(x);
    })
}

/// What both describes refuse: filters (not emulated), and `MaxResults` with ids or out of
/// range.
fn check_common(params: &Params, ids_key: &str, ids: &[String]) -> Result<(), ApiError> {
    if params.has_prefix("Filter") {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            format!("valkey-dr-lab does not emulate Filter: ask by {ids_key}.N."),
        ));
    }
    let max_results = params.int("MaxResults")?;
    if max_results.is_some() && !ids.is_empty() {
        return Err(ApiError::sender(
            "InvalidParameterCombination",
            format!("The parameter {ids_key}s cannot be used with the parameter MaxResults"),
        ));
    }
    if let Some(n) = max_results
        && !MAX_RESULTS.contains(&n)
    {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            format!(
                "Value ( {n} ) for parameter maxResults is invalid. Expecting a value between \
                 5 and 1000."
            ),
        ));
    }
    Ok(())
}

fn describe_subnets(
    lab: &Arc<Shared>,
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let ids = params.flat_list("SubnetId");
    check_common(params, "SubnetId", &ids)?;
    let existing: Vec<(usize, &str, char)> = LAB_SUBNETS
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| !lab.aws.subnet_deleted(id))
        .map(|(i, (id, zone))| (i, *id, *zone))
        .collect();
    for id in &ids {
        if !id.starts_with("subnet-") {
            return Err(ApiError::sender(
                "InvalidSubnetID.Malformed",
                format!("Invalid id: \"{id}\""),
            ));
        }
        if !existing.iter().any(|(_, known, _)| known == id) {
            return Err(ApiError::sender(
                "InvalidSubnetID.NotFound",
                format!("The subnet ID '{id}' does not exist"),
            ));
        }
    }
    let short = short_region(region);
    Ok(response("DescribeSubnets", request_id, |x| {
        x.element("subnetSet", |x| {
            for (i, id, zone) in &existing {
                if !ids.is_empty() && !ids.iter().any(|wanted| wanted == id) {
                    continue;
                }
                let az_number = if *zone == 'a' { 1 } else { 2 };
                x.element("item", |x| {
                    x.text("subnetId", id)
                        .text(
                            "subnetArn",
                            format!("arn:aws:ec2:{region}:{ACCOUNT_ID}:subnet/{id}"),
                        )
                        .text("state", "available")
                        .text("vpcId", LAB_VPC_ID)
                        .text("ownerId", ACCOUNT_ID)
                        .text("cidrBlock", format!("10.0.{}.0/24", i + 1))
                        .empty("ipv6CidrBlockAssociationSet")
                        .text("availableIpAddressCount", 251)
                        .text("availabilityZone", format!("{region}{zone}"))
                        .text("availabilityZoneId", format!("{short}-az{az_number}"))
                        .text("defaultForAz", false)
                        .text("mapPublicIpOnLaunch", false)
                        .text("assignIpv6AddressOnCreation", false)
                        .element("tagSet", |x| {
                            x.element("item", |x| {
                                x.text("key", "Name")
                                    .text("value", format!("valkey-dr-lab-{zone}"));
                            });
                        });
                });
            }
        });
    }))
}

/// `DescribeVpcs` by `VpcId.N`, or with the one filter an agent asks, `isDefault`: the lab
/// VPC is every region's default VPC until `default-vpc-delete` (then `isDefault=true` finds
/// nothing, as in an account whose default VPC was deleted). Any other filter is refused.
fn describe_vpcs(lab: &Arc<Shared>, params: &Params, request_id: &str) -> Result<String, ApiError> {
    let ids = params.flat_list("VpcId");
    let mut wanted_default = None;
    let mut n = 1;
    while let Some(name) = params.get(&format!("Filter.{n}.Name")) {
        let values: Vec<String> = (1..)
            .map_while(|i| {
                params
                    .get(&format!("Filter.{n}.Value.{i}"))
                    .map(str::to_owned)
            })
            .collect();
        if name != "isDefault"
            || values.len() != 1
            || !["true", "false"].contains(&values[0].as_str())
        {
            return Err(ApiError::sender(
                "InvalidParameterValue",
                format!(
                    "valkey-dr-lab emulates one DescribeVpcs filter, isDefault with one value true or false, not {name}={values:?}."
                ),
            ));
        }
        wanted_default = Some(values[0] == "true");
        n += 1;
    }
    for id in &ids {
        if !id.starts_with("vpc-") {
            return Err(ApiError::sender(
                "InvalidVpcID.Malformed",
                format!("Invalid id: \"{id}\""),
            ));
        }
        if id != LAB_VPC_ID {
            return Err(ApiError::sender(
                "InvalidVpcID.NotFound",
                format!("The vpc ID '{id}' does not exist"),
            ));
        }
    }
    let is_default = lab.aws.has_default_vpc();
    let listed = wanted_default.is_none_or(|d| d == is_default);
    Ok(response("DescribeVpcs", request_id, |x| {
        x.element("vpcSet", |x| {
            if listed {
                x.element("item", |x| {
                    x.text("vpcId", LAB_VPC_ID)
                        .text("ownerId", ACCOUNT_ID)
                        .text("state", "available")
                        .text("cidrBlock", "10.0.0.0/16")
                        .text("dhcpOptionsId", "dopt-lab0001")
                        .text("instanceTenancy", "default")
                        .text("isDefault", is_default);
                });
            }
        });
    }))
}

fn describe_security_groups(
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let ids = params.flat_list("GroupId");
    check_common(params, "GroupId", &ids)?;
    if params.has_prefix("GroupName") {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            "valkey-dr-lab does not emulate GroupName.N: ask by GroupId.N.",
        ));
    }
    for id in &ids {
        if !id.starts_with("sg-") {
            return Err(ApiError::sender(
                "InvalidGroupId.Malformed",
                format!("Invalid id: \"{id}\" (expecting \"sg-...\")"),
            ));
        }
        if id != LAB_SECURITY_GROUP_ID {
            return Err(ApiError::sender(
                "InvalidGroup.NotFound",
                format!("The security group '{id}' does not exist"),
            ));
        }
    }
    Ok(response("DescribeSecurityGroups", request_id, |x| {
        x.element("securityGroupInfo", |x| {
            x.element("item", |x| {
                x.text("ownerId", ACCOUNT_ID)
                    .text("groupId", LAB_SECURITY_GROUP_ID)
                    .text("groupName", LAB_SECURITY_GROUP_NAME)
                    .text("groupDescription", "valkey-dr lab caches")
                    .text("vpcId", LAB_VPC_ID)
                    .text(
                        "securityGroupArn",
                        format!(
                            "arn:aws:ec2:{region}:{ACCOUNT_ID}:security-group/{LAB_SECURITY_GROUP_ID}"
                        ),
                    )
                    .empty("ipPermissions")
                    .empty("ipPermissionsEgress");
            });
        });
    }))
}
