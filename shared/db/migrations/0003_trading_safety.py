from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0002_stake_action_chain_state')]

    initial = False

    operations = [
        ops.AddField(
            model_name='ApiToken',
            name='scopes',
            field=fields.CharField(default='read', max_length=64),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='era_end_block',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='era_start_block',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='extrinsic_nonce',
            field=fields.IntField(null=True),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='limit_price_rao',
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='settle_attempts',
            field=fields.IntField(default=0),
        ),
        ops.AddField(
            model_name='StakeAction',
            name='settle_error',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddIndex(
            model_name='StakeAction',
            index=Index(fields=['coldkey', 'created_at']),
        ),
    ]
