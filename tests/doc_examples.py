"""The Capillary endpoint pages' JSON examples, for the client's and the simulator's contracts.

One copy of the examples on the four seed pages (capillary-api/ beside DESIGN.md):
enrolAndEarn, revokeEnrolAndEarn, revokeDirectEarn and unEnroll. The request examples are
verbatim, `//` comments included (trailing spaces dropped); the response examples keep the pages'
values and comments, some laid out more compactly, and REVOKE_ENROL_RESPONSE_WITH_ISSUAL_ID is
the first entry of the page's REVOKE_ENROL answer. `page_json` reads an example as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any


def strip_comments(text: str) -> str:
    """The endpoint pages' JSON examples carry // comments; JSON does not."""
    return re.sub(r"//[^\n]*", "", text)


def page_json(text: str) -> Any:
    """An example as JSON: comments removed, and the one example that is not JSON repaired.

    revokeDirectEarn's "With earned Id" example writes `"earnIds": 66,67,`; it becomes the array
    the page's parameter table describes.
    """
    return json.loads(strip_comments(text).replace('"earnIds": 66,67,', '"earnIds": [66, 67],'))


# --------------------------------------------------------------------- enrolAndEarn page: requests

ENROL_ID = """
{
"type" : "CUSTOMER",
"bulkAction" : "ENROL",
"promotionDetails" : {
"programId": 469,
"promotionId":57099
},
"identifierName":"id",
"customers":
[
{
"identifierValue":"555567088",
"source":"INSTORE"
}
]
}
"""
ENROL_MOBILE = """
{
"type" : "CUSTOMER",
"bulkAction" : "ENROL",
"promotionDetails" : {
"programId": 469,
"promotionId":69218
},
"identifierName":"mobile",
"customers":
[
{
"identifierValue":"11223569865",
"source":"INSTORE"
},
{
"identifierValue":"919986000586",
"source":"INSTORE"
}
]
}
"""
EARN_ID = """
{
"type" : "CUSTOMER",
"bulkAction" : "EARN",
"promotionDetails" : {
"programId": 469,
"promotionId":57099
},
"identifierName":"id",
"customers":
[
{
"identifierValue":"555567088",
"source":"INSTORE"
}
]
}
"""
EARN_MOBILE = """
{
"type" : "CUSTOMER",
"bulkAction" : "EARN",
"promotionDetails" : {
"programId": 469,
"promotionId":69218
},
"identifierName":"mobile",
"customers":
[
{
"identifierValue":"11223569865",
"source":"INSTORE"
},
{
"identifierValue":"919986000586",
"source":"INSTORE"
}
]
}
"""

# -------------------------------------------------------------------- enrolAndEarn page: responses

ENROL_RESPONSE = """
{
"response": [
{"result": {"entityType": "CUSTOMER", "entityId": 423926199, "promotionId": 202188,
 "programId": 2714, "issualId": "847"}, "errors": [], "warnings": []},
{"result": {"entityType": "CUSTOMER", "entityId": 423926198, "promotionId": 202188,
 "programId": 2714, "issualId": "848"}, "errors": [], "warnings": []},
{"result": {"entityType": "CUSTOMER", "entityId": 423926200, "promotionId": 202188,
 "programId": 2714, "issualId": "849"}, "errors": [], "warnings": []},
{"result": {"entityType": "CUSTOMER", "entityId": 423926201, "promotionId": 202188,
 "programId": 2714, "issualId": "850"}, "errors": [], "warnings": []}
],
"totalCount": 4,
"failureCount": 0
}
"""
DIRECT_EARN_RESPONSE = """
{
"response": [
{
"result": {
"entityType": "CUSTOMER",
"entityId": 423926199,
"promotionId": 202090,
"programId": 2714,
"issualId": "837", //this is a dummy Id
"earnedId": "794"
},
"errors": [],
"warnings": []
},
{
"result": {
"entityType": "CUSTOMER",
"entityId": 423926198,
"promotionId": 202090,
"programId": 2714,
"issualId": "838", //this is a dummy Id
"earnedId": "795"
},
"errors": [],
"warnings": []
},
{
"result": {
"entityType": "CUSTOMER",
"entityId": 423926200,
"promotionId": 202090,
"programId": 2714,
"issualId": "839",
"earnedId": "796"
},
"errors": [],
"warnings": []
},
{
"result": {
"entityType": "CUSTOMER",
"entityId": 423926201,
"promotionId": 202090,
"programId": 2714,
"issualId": "840", //this is a dummy Id
"earnedId": "797"
},
"errors": [],
"warnings": []
}
],
"totalCount": 4,
"failureCount": 0
}
"""
PARTIAL_RESPONSE = """
{
"response": [
{
"result": {
"entityType": "CUSTOMER",
"entityId": 170940055,
"promotionId": 74116,
"programId": 699,
"issualId": "72",
"earnedId": "102"
},
"errors": [],
"warnings": []
},
{"errors": [{"status": false, "code": 8015,
  "message": "Customer not found for the given identifiers"}], "warnings": []},
{"errors": [{"status": false, "code": 8015,
  "message": "Customer not found for the given identifiers"}], "warnings": []},
{"errors": [{"status": false, "code": 8015,
  "message": "Customer not found for the given identifiers"}], "warnings": []}
],
"totalCount": 4,
"failureCount": 3
}
"""
ACTION_NOT_SUPPORTED = """
{
"response": [
{
"errors": [
{
"status": false,
"message": "bulk action passed not supported for loyalty/generic promotion type",
"code": 8902
}
],
"warnings": []
}
],
"totalCount": 1,
"failureCount": 1
}
"""

# --------------------------------------------------------------- revokeEnrolAndEarn page: requests

REVOKE_ENROL_ONE = """
{
"type": "CUSTOMER",
"bulkAction": "REVOKE_ENROL",
"promotionDetails": {
"programId": 2714,
"promotionId": "202779"
// "promoIdentifier": "95c77d88-470c-4dd3-bde4-606ae1b64277"
},
"identifierName": "id",
"customers": [
{
"identifierValue": "423927867",
"source": "instore"
}
]
}
"""
REVOKE_ENROL_TWO = """
{
"type": "CUSTOMER",
"bulkAction": "REVOKE_ENROL",
"promotionDetails": {
"programId": 2714,
"promotionId": "202779"
// "promoIdentifier": "95c77d88-470c-4dd3-bde4-606ae1b64277"
},
"identifierName": "id",
"customers": [
{
"identifierValue": "423927867",
"source": "instore"
},
{
"identifierValue": "423927868",
"source": "instore"
}
]
}
"""
REVOKE_EARN_IDENTIFIER = """
{
"type": "CUSTOMER",
"bulkAction": "REVOKE_EARN",
"promotionDetails": {
"programId": 2714,
//"promotionId": "202779"
"promoIdentifier": "95c77d88-470c-4dd3-bde4-606ae1b64277"
},
"identifierName": "id",
"customers": [
{
"identifierValue": "423927867",
"source": "instore"
}
]
}
"""
REVOKE_EARN_IDS = """
{
"type": "CUSTOMER",
"bulkAction": "REVOKE_EARN",
"promotionDetails": {
"programId": 2714,
"promoIdentifier": "1d9e540d-ae2c-443f-9d0d-7ac146bf93f2"
},
"identifierName": "id",
"customers": [
{
"identifierValue": "423927848",
"source": "instore",
"earnIds": [
959
]
},
{
"identifierValue": "423927855",
"source": "instore",
"earnIds": [
960,
963
]
},
{
"identifierValue": "423927856",
"source": "instore"
}
]
}
"""

# -------------------------------------------------------------- revokeEnrolAndEarn page: responses

REVOKE_ENROL_RESPONSE_WITH_ISSUAL_ID = """
{"response": [
{"result": {"entityType": "CUSTOMER", "entityId": 423926199, "promotionId": 202188,
 "programId": 2714, "issualId": "847"}, "errors": [], "warnings": []}
], "totalCount": 1, "failureCount": 0}
"""
REVOKE_EARN_RESPONSE = """
{
"response": [
{
"result": {
"entityType": "CUSTOMER",
"entityId": 423927867,
"promoIdentifier": "95c77d88-470c-4dd3-bde4-606ae1b64277",
"programId": 2714,
"revokedEarnIds": [
974
]
},
"errors": [],
"warnings": []
},
{
"result": {
"entityType": "CUSTOMER",
"entityId": 423927868,
"promoIdentifier": "95c77d88-470c-4dd3-bde4-606ae1b64277",
"programId": 2714,
"revokedEarnIds": [
975,
977
]
},
"errors": [],
"warnings": []
}
],
"totalCount": 2,
"failureCount": 0
}
"""

# ----------------------------------------------------------------- revokeDirectEarn page: requests

DIRECT_REVOKE = """
{
    "type":"CUSTOMER",
   "bulkAction":"REVOKE_EARN",
   "promotionDetails" : {
       "programId": 469,
       "promotionId":5709
    },
     "identifierName":"id",
    "customers":
    [
        {
            "identifierValue":"98662653",
            "source":"INSTORE"
        },
     {
            "identifierValue":"9866296543",
            "source":"INSTORE"
        }
    ]
}
"""
DIRECT_REVOKE_EARN_IDS = """
{
    "type":"CUSTOMER",
   "promotionDetails" : {
       "programId": 469,
       "promotionId":57099
    },
     "identifierName":"mobile",
    "customers":
    [
      {
            "earnIds": 66,67,
            "identifierValue":"919986000585",
            "source":"INSTORE"
        }
    ]
}
"""

# ----------------------------------------------------------------------------------- unEnroll page

UNENROLL = """
[
    {
        "customerId":423789336
    }
]
"""
UNENROLL_RESPONSE = """
{
  "data": 423789336,
  "errors": null,
  "warnings": null
}
"""
