import uuid

from pymongo import MongoClient

from retail_backbone.stack.components.mongo import mongo_uri


def test_insert_and_find(stack):
    cfg = stack.require("mongo")
    with MongoClient(mongo_uri(cfg), serverSelectionTimeoutMS=5000) as client:
        coll = client["it"][f"products_{uuid.uuid4().hex[:8]}"]
        coll.insert_many(
            [{"_id": "SKU-1", "brand": "acme", "price": 9.5}, {"_id": "SKU-2", "brand": "zeta"}]
        )
        assert coll.find_one({"_id": "SKU-1"}) == {"_id": "SKU-1", "brand": "acme", "price": 9.5}
        assert sorted(d["_id"] for d in coll.find({"brand": {"$in": ["acme", "zeta"]}})) == [
            "SKU-1",
            "SKU-2",
        ]
        coll.drop()
